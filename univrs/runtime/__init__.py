"""The thin Trio runtime that drives the sans-IO core: driver, storage writer, apply loop."""
