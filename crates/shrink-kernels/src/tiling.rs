//! How a GEMM's output is cut into tasks for rayon.

/// Splits `m` rows × `panels` column panels into `(r0, r1, p0, p1)` tasks,
/// about four per thread, row ranges a multiple of `mr` so register tiles
/// stay full. One task when single-threaded or tiny.
pub(crate) fn plan(m: usize, panels: usize, mr: usize) -> Vec<(usize, usize, usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || m * panels < 64 {
        return vec![(0, m, 0, panels)];
    }
    let want = threads * 4;
    let row_blocks = m.div_ceil(mr).clamp(1, want);
    let rows_per = m.div_ceil(row_blocks).div_ceil(mr) * mr;
    let row_blocks = m.div_ceil(rows_per);
    let panel_blocks = want.div_ceil(row_blocks).clamp(1, panels);
    let panels_per = panels.div_ceil(panel_blocks);
    let mut t = Vec::new();
    for rb in 0..row_blocks {
        let r0 = rb * rows_per;
        let r1 = (r0 + rows_per).min(m);
        let mut p0 = 0;
        while p0 < panels {
            let p1 = (p0 + panels_per).min(panels);
            t.push((r0, r1, p0, p1));
            p0 = p1;
        }
    }
    t
}

/// Rows per cache block: a block of activation rows of `row_bytes` each that
/// fits in about a quarter of L2 (256 KiB), a multiple of `mr`.
pub(crate) fn rows_per_block(row_bytes: usize, mr: usize) -> usize {
    ((256 * 1024 / row_bytes.max(1)) / mr).max(1) * mr
}

/// Runs `f(r0, r1, panel)` over the tasks, in parallel when there is more
/// than one. Inside a task, rows are visited in blocks of `mc` (outer) and
/// panels inner, so a block of activations stays in L2 while every weight
/// panel streams past it once.
pub(crate) fn run<F>(tasks: &[(usize, usize, usize, usize)], mc: usize, f: F)
where
    F: Fn(usize, usize, usize) + Sync,
{
    use rayon::prelude::*;
    let one = |&(r0, r1, p0, p1): &(usize, usize, usize, usize)| {
        let mut rb = r0;
        while rb < r1 {
            let re = rb.saturating_add(mc.max(1)).min(r1);
            for p in p0..p1 {
                f(rb, re, p);
            }
            rb = re;
        }
    };
    if tasks.len() == 1 {
        one(&tasks[0]);
    } else {
        tasks.par_iter().for_each(one);
    }
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn plan_covers_every_tile_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for &(m, p) in &[(1, 128), (64, 10), (3136, 2), (1000, 33), (9, 1)] {
            let t = pool.install(|| plan(m, p, 8));
            let mut seen = vec![0u8; m * p];
            for &(r0, r1, p0, p1) in &t {
                for r in r0..r1 {
                    for q in p0..p1 {
                        seen[r * p + q] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "m={m} panels={p}");
        }
    }
}
