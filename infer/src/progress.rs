//! Progress bars that also report into a log file.
//!
//! indicatif draws nothing when stderr is not a terminal, so a long job run as
//! `cargo xtask study ... > log 2>&1` (or under nohup, a scheduler, CI) used to stay silent
//! for tens of minutes. [`bar`] draws the usual bar on a terminal; elsewhere it writes the
//! same text as one plain line per change of the bar (position or message), at most one per
//! second, so a log shows how far a job is and how long it has left.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// A progress bar of `len` steps with `template` (indicatif syntax) and `prefix`: drawn on a
/// terminal, one line per update (at most one a second) into a non-terminal stderr.
pub fn bar(len: u64, template: &str, prefix: String) -> ProgressBar {
    let pb = if io::stderr().is_terminal() {
        ProgressBar::new(len)
    } else {
        ProgressBar::with_draw_target(
            Some(len),
            ProgressDrawTarget::term_like_with_hz(Box::new(LogLines::default()), 1),
        )
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// A [`TermLike`] that turns each redraw into one line on stderr (a repeated line is
/// written once).
#[derive(Default)]
struct LogLines {
    /// The redraw being assembled, and the last line written.
    state: Mutex<(String, String)>,
}

impl fmt::Debug for LogLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogLines")
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0.push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = std::mem::take(&mut st.0);
        let line = line.trim_end();
        if line.is_empty() || line == st.1 {
            return Ok(());
        }
        st.1 = line.to_string();
        let mut err = io::stderr().lock();
        writeln!(err, "{line}")?;
        err.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redraw_becomes_one_line_and_repeats_are_dropped() {
        let t = LogLines::default();
        t.write_str("eval gsm8k [===>  ] 3/8").unwrap();
        t.flush().unwrap();
        assert_eq!(t.state.lock().unwrap().1, "eval gsm8k [===>  ] 3/8");
        t.write_line("eval gsm8k [===>  ] 3/8").unwrap();
        t.flush().unwrap();
        assert_eq!(t.state.lock().unwrap().0, "");
        t.write_str("eval gsm8k [=====>] 4/8").unwrap();
        t.flush().unwrap();
        assert_eq!(t.state.lock().unwrap().1, "eval gsm8k [=====>] 4/8");
    }
}
