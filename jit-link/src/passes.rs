//! Pass configuration: named passes over `&mut LinkGraph` in the five phases of a link.

use std::fmt;

use crate::{LinkError, LinkGraph};

/// When a pass runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Phase {
    /// Before dead-stripping: mark roots, split sections, define linker symbols.
    PrePrune,
    /// After dead-stripping, before layout: add GOT, stubs, TLS entries (new blocks are not
    /// stripped).
    PostPrune,
    /// After memory is allocated: every block has its address; externals do not yet.
    PostAllocation,
    /// After externals are resolved, before fixups: every address is known.
    PreFixup,
    /// After fixups: block bytes are final; what a pass reads now is what will run.
    PostFixup,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] =
        [Phase::PrePrune, Phase::PostPrune, Phase::PostAllocation, Phase::PreFixup, Phase::PostFixup];

    fn index(self) -> usize {
        match self {
            Phase::PrePrune => 0,
            Phase::PostPrune => 1,
            Phase::PostAllocation => 2,
            Phase::PreFixup => 3,
            Phase::PostFixup => 4,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::PrePrune => "pre-prune",
            Phase::PostPrune => "post-prune",
            Phase::PostAllocation => "post-allocation",
            Phase::PreFixup => "pre-fixup",
            Phase::PostFixup => "post-fixup",
        })
    }
}

/// A pass: a function over the graph. It may run on any thread.
pub type PassFn = Box<dyn FnMut(&mut LinkGraph) -> Result<(), LinkError> + Send>;

/// A pass with the name tracing and [`PassConfig::remove`] know it by.
pub struct Pass {
    /// Its name (`"got_plt"`, `"eh_frame_split"`, a plugin's own).
    pub name: String,
    /// What it does.
    pub run: PassFn,
}

impl fmt::Debug for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pass").field("name", &self.name).finish()
    }
}

/// The passes of one link, per phase, in running order. A context (and through it, the
/// layer's plugins) edits it in [`crate::LinkContext::modify_pass_config`].
#[derive(Debug, Default)]
pub struct PassConfig {
    phases: [Vec<Pass>; 5],
}

impl PassConfig {
    /// No passes at all.
    pub fn empty() -> PassConfig {
        PassConfig::default()
    }

    /// The built-in passes of ELF x86-64, in order:
    ///
    /// - pre-prune: `eh_frame_split`, `init_fini_roots`, `libc_nonshared`, `dso_handle`, `section_start_stop`
    /// - post-prune: `tls_lowering`, `got_plt`
    /// - pre-fixup: `got_plt_relaxation`
    /// - post-fixup: `init_fini_collect`, `tls_template`, `eh_frame_register`
    pub fn with_default_passes() -> PassConfig {
        let mut c = PassConfig::empty();
        c.add(Phase::PrePrune, "eh_frame_split", crate::eh_frame::split_eh_frame);
        c.add(Phase::PrePrune, "init_fini_roots", crate::init_fini::mark_init_fini_live);
        c.add(Phase::PrePrune, "libc_nonshared", crate::builtins::define_libc_nonshared);
        c.add(Phase::PrePrune, "dso_handle", crate::builtins::define_dso_handle);
        c.add(Phase::PrePrune, "section_start_stop", crate::builtins::define_section_start_stop);
        c.add(Phase::PostPrune, "tls_lowering", crate::tls::lower_tls);
        c.add(Phase::PostPrune, "got_plt", crate::x86_64::build_got_and_stubs);
        c.add(Phase::PreFixup, "got_plt_relaxation", crate::x86_64::optimize_got_and_stub_accesses);
        c.add(Phase::PostFixup, "init_fini_collect", crate::init_fini::collect_init_fini);
        c.add(Phase::PostFixup, "tls_template", crate::tls::capture_tls_template);
        c.add(Phase::PostFixup, "eh_frame_register", crate::eh_frame::register_eh_frame);
        c
    }

    /// Appends a pass to a phase.
    pub fn add(
        &mut self,
        phase: Phase,
        name: impl Into<String>,
        pass: impl FnMut(&mut LinkGraph) -> Result<(), LinkError> + Send + 'static,
    ) {
        self.phases[phase.index()].push(Pass { name: name.into(), run: Box::new(pass) });
    }

    /// Puts a pass first in a phase.
    pub fn prepend(
        &mut self,
        phase: Phase,
        name: impl Into<String>,
        pass: impl FnMut(&mut LinkGraph) -> Result<(), LinkError> + Send + 'static,
    ) {
        self.phases[phase.index()].insert(0, Pass { name: name.into(), run: Box::new(pass) });
    }

    /// Removes the passes called `name` from a phase; whether any was there.
    pub fn remove(&mut self, phase: Phase, name: &str) -> bool {
        let passes = &mut self.phases[phase.index()];
        let before = passes.len();
        passes.retain(|p| p.name != name);
        passes.len() != before
    }

    /// The names of a phase's passes, in order.
    pub fn names(&self, phase: Phase) -> Vec<&str> {
        self.phases[phase.index()].iter().map(|p| p.name.as_str()).collect()
    }

    /// The passes of a phase, to reorder or wrap.
    pub fn passes_mut(&mut self, phase: Phase) -> &mut Vec<Pass> {
        &mut self.phases[phase.index()]
    }

    /// Runs a phase's passes in order; the first error stops it.
    pub(crate) fn run(&mut self, phase: Phase, graph: &mut LinkGraph) -> Result<(), LinkError> {
        for pass in &mut self.phases[phase.index()] {
            let _span = tracing::trace_span!("pass", %phase, name = %pass.name).entered();
            (pass.run)(graph)?;
        }
        Ok(())
    }
}
