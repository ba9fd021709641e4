//! Server-side downsampling: the rows of a step range folded into at most `points` buckets of
//! equal step width — mean, minimum and maximum of each series per bucket — while SQLite streams
//! them in step order, so memory does not grow with the run. Long ranges are split at bucket
//! boundaries and scanned on several cores at once (each part on its own read-only connection),
//! then joined. The same pass yields whole-run statistics when the range is the whole run.

use rusqlite::{params, Connection, OpenFlags};

use crate::metrics::{extent, fill_empty, json, num, select, sql, Acc, Curves, Values};
use crate::Result;

/// Rows below which one thread scans the whole range (a split costs a connection per part).
const SPLIT_ROWS: u64 = 40_000;

/// What one scan of a sub-range found.
#[derive(Default)]
struct Part {
    step: Vec<u64>,
    time_ms: Vec<i64>,
    vals: Vec<Values>,
    /// Per series: the range's totals and its newest row's reading.
    all: Vec<Acc>,
    rows: u64,
}

/// Scans steps `lo..=hi` with query `q` (step, time, then one column per series) into buckets
/// counted from `base`.
fn scan(
    conn: &Connection,
    q: &str,
    n: usize,
    lo: u64,
    hi: u64,
    base: u64,
    bucket: u64,
) -> Result<Part> {
    let mut st = conn.prepare(q).map_err(sql)?;
    let mut p = Part {
        vals: vec![Values::default(); n],
        all: vec![Acc::default(); n],
        ..Default::default()
    };
    let mut acc = vec![Acc::default(); n];
    let mut current: Option<(u64, u64, i64)> = None; // (bucket index, last step, last time)
    let mut rows = st.query(params![lo, hi]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let step: u64 = r.get(0).map_err(sql)?;
        let time: i64 = r.get(1).map_err(sql)?;
        let k = (step - base) / bucket;
        if let Some((ck, cs, ct)) = current {
            if ck != k {
                flush(&mut p, &mut acc, cs, ct, bucket);
            }
        }
        current = Some((k, step, time));
        p.rows += 1;
        for (i, (a, t)) in acc.iter_mut().zip(p.all.iter_mut()).enumerate() {
            let v = num(r, 2 + i);
            a.add(v);
            t.add(v);
        }
    }
    if let Some((_, cs, ct)) = current {
        flush(&mut p, &mut acc, cs, ct, bucket);
    }
    Ok(p)
}

/// Ends the current bucket: its last step and time, and each series' mean (and min/max when
/// buckets hold more than one step).
fn flush(p: &mut Part, acc: &mut [Acc], step: u64, time: i64, bucket: u64) {
    p.step.push(step);
    p.time_ms.push(time);
    for (a, v) in acc.iter_mut().zip(p.vals.iter_mut()) {
        let st = a.stat();
        v.mean.push(st.mean);
        if bucket > 1 {
            v.min.get_or_insert_with(Vec::new).push(st.min);
            v.max.get_or_insert_with(Vec::new).push(st.max);
        }
        *a = Acc::default();
    }
}

/// Splits `from..=to` into up to `k` parts that start on bucket boundaries.
fn split(from: u64, to: u64, bucket: u64, k: u64) -> Vec<(u64, u64)> {
    let buckets = (to - from) / bucket + 1;
    let per = buckets.div_ceil(k.max(1)).max(1);
    let mut out = Vec::new();
    let mut b = 0;
    while b < buckets {
        let lo = from + b * bucket;
        let hi = (from + (b + per) * bucket - 1).min(to);
        out.push((lo, hi));
        b += per;
    }
    out
}

/// The curves of `series` over steps `from..=to` (default: the whole run), at most `points`
/// buckets of equal step width; with the whole run, also its statistics.
pub fn downsample(
    conn: &Connection,
    series: &[String],
    points: usize,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<Curves> {
    let (first, last, rows) = extent(conn)?;
    let whole = from.is_none() && to.is_none();
    let from = from.unwrap_or(first).max(first.min(1));
    let to = to.unwrap_or(last);
    let mut out = Curves {
        series: series.to_vec(),
        from,
        to,
        ..Default::default()
    };
    if to < from || last == 0 {
        out.bucket = 1;
        fill_empty(&mut out);
        return Ok(out);
    }
    let bucket = (to - from + 1).div_ceil(points.max(1) as u64).max(1);
    out.bucket = bucket;
    let q = select(series, "WHERE step BETWEEN ?1 AND ?2 ORDER BY step")?;
    let n = series.len();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get().min(4)) as u64;
    let path = conn.path().filter(|p| !p.is_empty()).map(str::to_string);
    let parts: Vec<Part> = match path {
        Some(path) if cores > 1 && rows >= SPLIT_ROWS && bucket > 1 => {
            let ranges = split(from, to, bucket, cores);
            std::thread::scope(|sc| {
                let handles: Vec<_> = ranges
                    .iter()
                    .map(|&(lo, hi)| {
                        let (q, path) = (&q, &path);
                        sc.spawn(move || {
                            let c = Connection::open_with_flags(
                                path,
                                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                            )
                            .map_err(sql)?;
                            scan(&c, q, n, lo, hi, from, bucket)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(crate::Error::Sql("a scan thread panicked".into()))
                        })
                    })
                    .collect::<Result<Vec<Part>>>()
            })?
        }
        _ => vec![scan(conn, &q, n, from, to, from, bucket)?],
    };
    // Join the parts in step order.
    let mut vals = vec![Values::default(); n];
    let mut all = vec![Acc::default(); n];
    for p in parts {
        out.step.extend(p.step);
        out.time_ms.extend(p.time_ms);
        out.total += p.rows;
        for (v, pv) in vals.iter_mut().zip(p.vals) {
            v.mean.extend(pv.mean);
            if let Some(m) = pv.min {
                v.min.get_or_insert_with(Vec::new).extend(m);
            }
            if let Some(m) = pv.max {
                v.max.get_or_insert_with(Vec::new).extend(m);
            }
        }
        if p.rows > 0 {
            for (a, pa) in all.iter_mut().zip(&p.all) {
                a.merge(pa);
            }
        }
    }
    for (name, v) in series.iter().zip(vals) {
        out.values.insert(name.clone(), json(&v));
    }
    if whole {
        let stats = series.iter().zip(&all);
        out.stats = Some(
            stats
                .map(|(name, a)| (name.clone(), json(&a.stat())))
                .collect(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_start_on_bucket_boundaries_and_cover_the_range() {
        for (from, to, bucket, k) in [
            (1, 200_000, 200, 2),
            (1, 10, 3, 4),
            (5, 1000, 7, 3),
            (1, 1, 1, 2),
        ] {
            let parts = split(from, to, bucket, k);
            assert!(parts.len() as u64 <= k);
            assert_eq!(parts[0].0, from);
            assert_eq!(parts.last().unwrap().1, to);
            for w in parts.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
                assert_eq!((w[1].0 - from) % bucket, 0, "{parts:?}");
            }
        }
    }
}
