//! State events: what the session tells `tracing` as units and symbols change state, for tools
//! that show the JIT at work (orcjit's `--board` page, a Perfetto trace). The vocabulary lives
//! here so that the code emitting events and the tools reading them agree.
//!
//! Every event has target [`TARGET`] and its state as the message. The thread and the time are
//! the subscriber's to record.
//!
//! - Unit events, level DEBUG, with fields `unit` (the unit's name) and `dylib` (the dylib's
//!   index): [`ADDED`] (also `symbols`: how many it defines), [`QUEUED`] (also `priority`),
//!   [`MATERIALIZING`] (a worker started it), [`RESOLVED`], [`EMITTED`], [`FAILED`] (also
//!   `error`). A unit handed back by a responsibility (`replace`) is added again; the
//!   responsibility events carry the name of the unit that started the materialization.
//! - Symbol events, level TRACE, with fields `dylib` and `symbol`: [`ADDED`], [`MATERIALIZING`],
//!   [`RESOLVED`] and [`EMITTED`] (each also with `unit`), [`READY`] and [`FAILED`] (a symbol
//!   fails with its unit, or because a dependency failed). A unit is ready when every symbol it
//!   emitted is. Symbols defined ready at once (absolute symbols) have no events.
//!
//! Emitting costs one check of a cached flag while no subscriber wants these events.

use tracing::Level;

/// The target of every state event.
pub const TARGET: &str = "orcjit::state";

pub const ADDED: &str = "added";
pub const QUEUED: &str = "queued";
pub const MATERIALIZING: &str = "materializing";
pub const RESOLVED: &str = "resolved";
pub const EMITTED: &str = "emitted";
pub const READY: &str = "ready";
pub const FAILED: &str = "failed";

/// Whether a subscriber wants unit events.
pub(crate) fn units_enabled() -> bool {
    tracing::enabled!(target: TARGET, Level::DEBUG)
}

/// Whether a subscriber wants symbol events.
pub(crate) fn symbols_enabled() -> bool {
    tracing::enabled!(target: TARGET, Level::TRACE)
}

/// A unit event (see the module's documentation for `state` and the fields).
macro_rules! unit_event {
    ($state:expr, $unit:expr, $dylib:expr $(, $($field:tt)+)?) => {
        tracing::debug!(target: $crate::events::TARGET, unit = $unit, dylib = $dylib, $($($field)+,)? "{}", $state)
    };
}

/// A symbol event (see the module's documentation for `state` and the fields).
macro_rules! symbol_event {
    ($state:expr, $dylib:expr, $symbol:expr $(, $($field:tt)+)?) => {
        tracing::trace!(target: $crate::events::TARGET, dylib = $dylib, symbol = $symbol, $($($field)+,)? "{}", $state)
    };
}

pub(crate) use {symbol_event, unit_event};
