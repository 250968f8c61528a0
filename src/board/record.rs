//! What the board records while the program runs, and its JSON form for the page.
//!
//! Squares are keyed by unit name (a module's units all carry the module's name). A square's
//! state changes are kept as they happened; "ready" is derived here from the symbol events: a
//! square is ready each time every symbol it emitted is ready. Work intervals come from the
//! spans the layers open around materializing, preparing, compiling, tiering up and linking,
//! one lane per thread.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Instant;

use jit_core::events;
use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The spans that mean a thread is working on a module, and the field naming it.
const WORK_SPANS: [(&str, &str); 5] =
    [("materialize", "unit"), ("prepare", "module"), ("compile", "module"), ("tier up", "module"), ("link", "object")];

/// Whether the board wants this callsite: state events (and `enabled!` asking for them), and
/// the work spans.
pub(super) fn wanted(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.target() == "orcjit" && WORK_SPANS.iter().any(|(name, _)| *name == meta.name())
    } else {
        meta.target() == events::TARGET
    }
}

pub(super) struct Recording {
    start: Instant,
    lanes: Vec<String>,
    lane_of: HashMap<ThreadId, usize>,
    squares: Vec<Square>,
    square_of: HashMap<String, usize>,
    /// Emitted symbols not yet ready, by (dylib index, name): their square.
    unready: HashMap<(u64, String), usize>,
    intervals: Vec<Interval>,
}

struct Square {
    name: String,
    /// (microseconds since start, state, lane), in order.
    changes: Vec<(u64, &'static str, usize)>,
    /// Symbols emitted and not yet ready or failed.
    unready: usize,
}

struct Interval {
    lane: usize,
    start: u64,
    end: u64,
    kind: &'static str,
    label: String,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            start: Instant::now(),
            lanes: Vec::new(),
            lane_of: HashMap::new(),
            squares: Vec::new(),
            square_of: HashMap::new(),
            unready: HashMap::new(),
            intervals: Vec::new(),
        }
    }
}

impl Recording {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn lane(&mut self) -> usize {
        let thread = std::thread::current();
        if let Some(&lane) = self.lane_of.get(&thread.id()) {
            return lane;
        }
        let name = thread.name().map_or_else(|| format!("{:?}", thread.id()), str::to_string);
        self.lanes.push(name);
        self.lane_of.insert(thread.id(), self.lanes.len() - 1);
        self.lanes.len() - 1
    }

    fn square(&mut self, name: &str) -> usize {
        if let Some(&i) = self.square_of.get(name) {
            return i;
        }
        self.squares.push(Square { name: name.to_string(), changes: Vec::new(), unready: 0 });
        self.square_of.insert(name.to_string(), self.squares.len() - 1);
        self.squares.len() - 1
    }

    fn change(&mut self, square: usize, state: &'static str) {
        let (t, lane) = (self.now(), self.lane());
        self.squares[square].changes.push((t, state, lane));
    }

    fn on_state_event(&mut self, e: &StateEvent) {
        let Some(state) = canonical_state(&e.state) else { return };
        match (&e.symbol, &e.unit) {
            // A unit event.
            (None, Some(unit)) => {
                let square = self.square(unit);
                // A module's partitions are added again as it is split: the first add is news.
                if state != events::ADDED || self.squares[square].changes.is_empty() {
                    self.change(square, state);
                }
            }
            // A symbol emitted by a unit: it holds the unit's square back from ready.
            (Some(symbol), Some(unit)) if state == events::EMITTED => {
                let square = self.square(unit);
                if self.unready.insert((e.dylib, symbol.clone()), square).is_none() {
                    self.squares[square].unready += 1;
                }
            }
            (Some(symbol), None) if state == events::READY || state == events::FAILED => {
                let Some(square) = self.unready.remove(&(e.dylib, symbol.clone())) else { return };
                self.squares[square].unready -= 1;
                if state == events::FAILED {
                    self.change(square, events::FAILED);
                } else if self.squares[square].unready == 0 {
                    self.change(square, events::READY);
                }
            }
            _ => {}
        }
    }

    pub(super) fn counts(&self) -> (usize, usize) {
        (self.squares.iter().map(|s| s.changes.len()).sum(), self.intervals.len())
    }

    /// The page's data. Squares are `modules` if any are given (matched to unit names exactly,
    /// and to work labels exactly or as `module#part`), else every unit name seen.
    pub(super) fn to_json(&self, title: &str, modules: &[String]) -> String {
        let names: Vec<String> = if modules.is_empty() {
            let mut names: Vec<String> = self.squares.iter().map(|s| s.name.clone()).collect();
            names.sort();
            names
        } else {
            modules.to_vec()
        };
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let square_of_label = |label: &str| {
            let module = label.split_once('#').map_or(label, |(m, _)| m);
            index.get(label).or_else(|| index.get(module)).map_or(-1, |&i| i as i64)
        };
        let squares: Vec<Value> = names
            .iter()
            .map(|name| {
                let changes: Vec<Value> = self
                    .square_of
                    .get(name)
                    .map(|&i| self.squares[i].changes.iter().map(|(t, s, lane)| json!([t, s, lane])).collect())
                    .unwrap_or_default();
                json!({ "name": name, "short": short_name(name), "changes": changes })
            })
            .collect();
        // Outer work first, so that the page draws what it encloses on top of it.
        let mut order: Vec<&Interval> = self.intervals.iter().collect();
        order.sort_by_key(|iv| (iv.start, std::cmp::Reverse(iv.end)));
        let intervals: Vec<Value> = order
            .into_iter()
            .map(|iv| json!([iv.lane, iv.start, iv.end, iv.kind, iv.label, square_of_label(&iv.label)]))
            .collect();
        let end = self
            .squares
            .iter()
            .flat_map(|s| s.changes.iter().map(|c| c.0))
            .chain(self.intervals.iter().map(|iv| iv.end))
            .max()
            .unwrap_or(0);
        json!({
            "title": title,
            "end": end.max(1),
            "lanes": self.lanes,
            "squares": squares,
            "intervals": intervals,
        })
        .to_string()
    }
}

/// The page's name for a square: the file name without directories and extension.
fn short_name(name: &str) -> String {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.rsplit_once('.').map_or(file, |(stem, _)| stem).to_string()
}

/// The event's state as one of the vocabulary's `&'static str`s.
fn canonical_state(state: &str) -> Option<&'static str> {
    [
        events::ADDED,
        events::QUEUED,
        events::MATERIALIZING,
        events::RESOLVED,
        events::EMITTED,
        events::READY,
        events::FAILED,
    ]
    .into_iter()
    .find(|s| *s == state)
}

/// The fields of a state event.
#[derive(Default)]
struct StateEvent {
    state: String,
    unit: Option<String>,
    symbol: Option<String>,
    dylib: u64,
}

impl Visit for StateEvent {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "dylib" {
            self.dylib = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "unit" => self.unit = Some(value.to_string()),
            "symbol" => self.symbol = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.state, "{value:?}");
        }
    }
}

/// The label of a work span (the field that names its module).
struct Label<'a> {
    field: &'a str,
    value: String,
}

impl Visit for Label<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.field {
            self.value = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.field {
            self.value = format!("{value:?}");
        }
    }
}

/// A work span's kind and label, and when it was entered (kept in the span's extensions).
struct Work {
    kind: &'static str,
    label: String,
    entered: Option<(u64, usize)>,
}

pub(super) struct BoardLayer {
    recording: Arc<Mutex<Recording>>,
}

impl BoardLayer {
    pub(super) fn new(recording: Arc<Mutex<Recording>>) -> Self {
        BoardLayer { recording }
    }

    fn recording(&self) -> MutexGuard<'_, Recording> {
        self.recording.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> Layer<S> for BoardLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let Some((kind, field)) = WORK_SPANS.iter().find(|(name, _)| *name == meta.name()) else { return };
        let mut label = Label { field, value: String::new() };
        attrs.record(&mut label);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Work { kind, label: label.value, entered: None });
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(work) = extensions.get_mut::<Work>() else { return };
        let mut recording = self.recording();
        work.entered = Some((recording.now(), recording.lane()));
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(work) = extensions.get_mut::<Work>() else { return };
        let Some((start, lane)) = work.entered.take() else { return };
        let mut recording = self.recording();
        let end = recording.now();
        recording.intervals.push(Interval { lane, start, end, kind: work.kind, label: work.label.clone() });
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = StateEvent::default();
        event.record(&mut fields);
        self.recording().on_state_event(&fields);
    }
}
