//! How a command ended, and the exit status that says so. Petal's exit codes are defined here
//! and applied in `main` only (which also maps errors to them), as ripgrep keeps its own.

/// Every input was handled.
pub const OK: u8 = 0;
/// The command failed: bad arguments, an unreadable model, a write error.
pub const ERROR: u8 = 1;
/// `predict`, `score`, `eval` and `explain` finished but skipped some inputs (unreadable
/// images, each reported on stderr): the output is usable, yet incomplete.
pub const SKIPPED: u8 = 2;
/// Stopped by Ctrl-C (the shell's 128 + SIGINT): a training run saved its checkpoint first.
pub const INTERRUPTED: u8 = 130;

/// How a command that ran to its end finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Every input handled.
    Complete,
    /// Done, with this many inputs skipped.
    Skipped(usize),
}

impl Finished {
    /// A command that processed its inputs and skipped `skipped` of them.
    pub fn skipping(skipped: usize) -> Self {
        if skipped == 0 {
            Finished::Complete
        } else {
            Finished::Skipped(skipped)
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Finished::Complete => OK,
            Finished::Skipped(_) => SKIPPED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Finished::skipping(0).code(), 0);
        assert_eq!(Finished::skipping(3), Finished::Skipped(3));
        assert_eq!(Finished::skipping(3).code(), 2);
    }
}
