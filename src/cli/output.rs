//! Human-readable rendering and the progress display.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use cairn::ops::progress::Progress;

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}

pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}.{:01}", s / 60, s % 60, d.subsec_millis() / 100)
    }
}

/// Mode bits as `ls -l` shows them.
pub fn mode_string(kind: cairn::format::tree::NodeKind, mode: u32) -> String {
    use cairn::format::tree::NodeKind as K;
    let t = match kind {
        K::File => '-',
        K::Dir => 'd',
        K::Symlink => 'l',
        K::Fifo => 'p',
        K::CharDev => 'c',
        K::BlockDev => 'b',
        K::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (bit, c) in bits {
        s.push(if mode & bit != 0 { c } else { '-' });
    }
    s
}

/// A progress bar on standard error, drawn only on a terminal.
pub struct ProgressBar {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressBar {
    pub fn start(progress: Arc<Progress>, quiet: bool, what: &'static str) -> ProgressBar {
        if quiet || !std::io::stderr().is_terminal() {
            return ProgressBar {
                stop: None,
                task: None,
            };
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let task = tokio::spawn(async move {
            loop {
                let total = Progress::get(&progress.total_bytes);
                let done = Progress::get(&progress.bytes);
                bar.set_length(total.max(done));
                bar.set_position(done);
                bar.set_message(format!(
                    "{what} {} files{}",
                    Progress::get(&progress.files),
                    match Progress::get(&progress.errors) {
                        0 => String::new(),
                        n => format!(", {n} errors"),
                    }
                ));
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                }
            }
            bar.finish_and_clear();
        });
        ProgressBar {
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
