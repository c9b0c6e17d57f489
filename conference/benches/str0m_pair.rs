//! What one forwarded frame costs inside str0m, against the number of m-lines of the
//! connection it is written into, by each send path (issue 26).
//!
//! `cargo bench -p patchbay-conference --bench str0m_pair`
//!
//! An in-process pair of str0m peers on fake time (`common/pair.rs`): ours offers a
//! subscribing connection with N send-only Opus m-lines and a data channel, as the
//! session core does. Each iteration writes one 20 ms Opus frame into the next m-line
//! and runs our peer as the session core does: `write` is `Writer::write` and a drive (a
//! timeout first, then `poll_output` until a future timeout), as before issue 26;
//! `write_now` is `Writer::write_now` (str0m patch 0002), the connection driven only for
//! its own timers when due. Only that is timed; the datagrams then reach the other
//! peer, whose answers (RTCP, consent) come back and are run, untimed. Fake time moves
//! 20 ms / N per frame: every m-line carries 50 frames a second, as a subscriber to N
//! publishers receives.
//!
//! Printed at the end: the cost per frame at 1, 5, 19 and 50 m-lines by each path, each
//! against one m-line by `write` (if str0m's cost per frame did not depend on the
//! connection's other streams, every ratio would be about 1), and `write` / `write_now`.

mod common;
use common::mean_ns;
use common::pair::{Pair, Path};

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use str0m::media::MediaKind;

/// The criterion group these benches are saved under.
const GROUP: &str = "str0m_forward_one_frame";

const M_LINES: [usize; 4] = [1, 5, 19, 50];

fn bench(c: &mut Criterion) {
    let data: Arc<[u8]> = vec![0x5a; 80].into();
    let mut g = c.benchmark_group(GROUP);
    for m in M_LINES {
        for (path, name) in [(Path::Queued, "write"), (Path::Now, "write_now")] {
            let mut pair = Pair::new(Instant::now(), m, MediaKind::Audio, |c| c);
            g.bench_function(format!("{m}_m_lines_{name}"), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        pair.forward(&data, path);
                        timed += t.elapsed();
                        pair.settle();
                    }
                    timed
                })
            });
            if pair.frames == 0 {
                continue; // filtered out
            }
            let f = pair.frames as f64;
            println!(
                "{m} m-lines, {name}: {:.2} polls and {:.2} timeouts per frame, {:.0} % sent at once ({} frames)",
                pair.polls as f64 / f,
                pair.timeouts as f64 / f,
                100.0 * pair.frames_now as f64 / f,
                pair.frames
            );
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    let Some(one) = mean_ns(GROUP, "1_m_lines_write") else {
        return;
    };
    println!(
        "\nOne forwarded Opus frame, by m-lines on the connection (write: `Writer::write` + a drive until it waits; write_now: the immediate path of issue 26):"
    );
    for m in M_LINES {
        let queued = mean_ns(GROUP, &format!("{m}_m_lines_write"));
        let now = mean_ns(GROUP, &format!("{m}_m_lines_write_now"));
        if let (Some(q), Some(n)) = (queued, now) {
            println!(
                "  {m:>2} m-lines  write {q:>7.0} ns ({:.2}x one m-line)  write_now {n:>7.0} ns ({:.2}x one m-line)  write / write_now {:.2}x",
                q / one,
                n / one,
                q / n
            );
        }
    }
}
