//! Per-stage progress for the CLI: indicatif bars on a terminal, a few plain lines otherwise.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        Self { bars: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())) }
    }

    pub fn stage(&self, name: &str) -> Stage {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(1000));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {percent:>3}% {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            bar
        });
        Stage { name: name.to_string(), bar, started: Instant::now(), last_step: Arc::new(Mutex::new(-1)) }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
pub struct Stage {
    name: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last_step: Arc<Mutex<i64>>,
}

impl Stage {
    pub fn set(&self, fraction: f64) {
        let fraction = fraction.clamp(0.0, 1.0);
        match &self.bar {
            Some(bar) => bar.set_position((fraction * 1000.0) as u64),
            None => {
                let step = (fraction * 4.0).floor() as i64;
                let mut last = self.last_step.lock().expect("progress lock");
                if step > *last && step < 4 {
                    *last = step;
                    eprintln!("{}: {}%", self.name, step * 25);
                }
            }
        }
    }

    /// A closure for APIs that report progress through a callback.
    pub fn reporter(&self) -> Arc<dyn Fn(f64) + Send + Sync> {
        let stage = self.clone();
        Arc::new(move |f| stage.set(f))
    }

    /// Marks the stage done and returns how long it took in milliseconds.
    pub fn finish(&self, note: &str) -> u64 {
        let ms = self.started.elapsed().as_millis() as u64;
        match &self.bar {
            Some(bar) => {
                bar.set_position(1000);
                bar.finish_with_message(format!("{note} ({:.1} s)", ms as f64 / 1000.0));
            }
            None => eprintln!("{}: done {note} ({:.1} s)", self.name, ms as f64 / 1000.0),
        }
        ms
    }
}
