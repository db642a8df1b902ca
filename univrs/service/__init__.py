"""The application interface that the server and its clients share: the operations of the
client surface, declared once (``operations``), and the JSON Schemas of their arguments and
results (``schemas``). The errors they answer are the product's one family, ``univrs.errors``.

This layer sits under the API (``univrs.api``), the Python client (``univrs.client``) and the
command line (``univrs.cli``), which all derive their surface from it; it imports only the
state machine (its limits and enums) and ``univrs.errors``.
"""
