//! Standard output that a reader may close early (`streamsim run ... | head`): once the pipe
//! is broken, what is left to print is dropped, so the command still finishes and its exit
//! status stays the verdict (a failing seed exits 1 even when nobody reads its report).

use std::io::{self, Write};

/// Standard output, tolerant of a closed pipe; every other write error is returned.
pub struct Stdout {
    inner: io::StdoutLock<'static>,
    closed: bool,
}

/// Locks standard output for the rest of a command.
pub fn stdout() -> Stdout {
    Stdout {
        inner: io::stdout().lock(),
        closed: false,
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}
