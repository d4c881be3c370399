//! Sluice's log in the test binary. A process has one global tracing subscriber, and the
//! whole suite is one process: the first test that asks installs it, and every test that
//! reads the log reads the same capture. It holds everything Sluice logs at trace level,
//! from whichever thread (the workers and the API run on the runtime's threads), so a test
//! can assert that no secret reached the log.

use std::sync::{Arc, Mutex, OnceLock};

/// Everything Sluice has logged in this test process since the capture was installed.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

impl Log {
    /// The log so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The process's log capture, installed on first use.
pub fn captured() -> &'static Log {
    static CAPTURE: OnceLock<Log> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let log = Log::default();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("sluice=trace"))
            .with_ansi(false)
            .with_writer(log.clone())
            .init();
        log
    })
}
