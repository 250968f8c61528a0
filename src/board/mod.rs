//! The module board: a `tracing` layer that records the session's state events (see
//! `jit_core::events`) and the workers' compile and link spans, and writes them out as one
//! self-contained HTML page that replays the run: a square per module moving through the states
//! (added, queued, compiling, resolved, emitted, ready, failed), a lane per thread showing what
//! it worked on, and a time slider.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! let board = orcjit::board::Board::new();
//! tracing::subscriber::set_global_default(tracing_subscriber::registry().with(board.layer()))?;
//! // ... run the JIT ...
//! board.write_html(std::path::Path::new("board.html"), "my run", &["a.bc".to_string()])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod page;
mod record;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use record::{BoardLayer, Recording};

/// Records a run for the board page. Cheap to clone; every clone shares the recording.
#[derive(Clone, Default)]
pub struct Board {
    recording: Arc<Mutex<Recording>>,
}

impl Board {
    /// A board whose clock starts now.
    pub fn new() -> Board {
        Board::default()
    }

    /// The layer to add to a `tracing_subscriber` registry. It takes only orcjit's state
    /// events and spans, whatever the registry's other layers take.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        BoardLayer::new(self.recording.clone()).with_filter(filter_fn(record::wanted))
    }

    /// Writes the page. `modules` are the squares, in order (each module's units are found by
    /// name); with none, every unit name recorded gets a square.
    pub fn write_html(&self, path: &Path, title: &str, modules: &[String]) -> std::io::Result<()> {
        let data = self.recording.lock().unwrap_or_else(|p| p.into_inner()).to_json(title, modules);
        std::fs::write(path, page::render(title, &data))
    }

    /// How many state events and work intervals were recorded (for tests and summaries).
    pub fn counts(&self) -> (usize, usize) {
        self.recording.lock().unwrap_or_else(|p| p.into_inner()).counts()
    }
}
