// Prometheus text format, just enough for the dashboard: samples by name and labels, rates
// from two scrapes, and a quantile from histogram bucket deltas.

/** Parse exposition text into [{name, labels, value}]. Comments and bad lines are skipped. */
export function parseMetrics(text) {
  const out = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    }
    const value = m[4] === "+Inf" ? Infinity : m[4] === "-Inf" ? -Infinity : Number(m[4]);
    if (!Number.isNaN(value)) out.push({ name: m[1], labels, value });
  }
  return out;
}

/** The sum of every sample called `name` (whatever its labels). */
export function total(samples, name) {
  let sum = 0;
  for (const s of samples) if (s.name === name) sum += s.value;
  return sum;
}

/** Cumulative histogram buckets of `name`: Map(le -> count). */
export function buckets(samples, name) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    out.set(le, (out.get(le) || 0) + s.value);
  }
  return out;
}

/** Bucket counts observed between two scrapes (a restarted node's counters start again). */
export function bucketDelta(before, after) {
  const out = new Map();
  for (const [le, count] of after) {
    const prev = before ? before.get(le) || 0 : 0;
    out.set(le, count >= prev ? count - prev : count);
  }
  return out;
}

/** Add bucket maps together (histograms of several members). */
export function mergeBuckets(maps) {
  const out = new Map();
  for (const m of maps) for (const [le, c] of m) out.set(le, (out.get(le) || 0) + c);
  return out;
}

/**
 * The q-quantile of cumulative buckets, interpolated linearly inside its bucket (as
 * Prometheus' histogram_quantile does); null without observations.
 */
export function quantile(q, cumulative) {
  const les = [...cumulative.keys()].sort((a, b) => a - b);
  if (!les.length) return null;
  const count = cumulative.get(les[les.length - 1]);
  if (!count) return null;
  const rank = q * count;
  let prevLe = 0;
  let prevCount = 0;
  for (const le of les) {
    const c = cumulative.get(le);
    if (c >= rank) {
      if (le === Infinity) return prevLe; // beyond the last finite bound: report that bound
      const inBucket = c - prevCount;
      return inBucket > 0 ? prevLe + ((le - prevLe) * (rank - prevCount)) / inBucket : le;
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}
