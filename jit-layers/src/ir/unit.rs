//! An IR module waiting to be compiled, and how its objects are obtained when it is looked up:
//! from the object cache when possible, otherwise compiled, as one object or, for a large
//! module and several threads, as partitions compiled in parallel.

use std::sync::Arc;

use inkwell::context::Context;
use inkwell::module::Module;
use jit_core::{
    Error, FxHashSet, Interface, JitDylib, MaterializationResponsibility, MaterializationUnit, Result, SymbolFlags,
    SymbolName, Task, TaskKind,
};

use super::compile::{cache_key, canonicalize_locals, compile_with, restrict_to, settings_id};
use super::layer::{IrShared, IrTransform};
use super::module::{IrSource, ModuleBuilder, parse, parse_stripped, strip_debug_info, stripped_bitcode};
use super::partition::{defined_names, keep_partition, plan, promote_locals, split_count};
use super::wire::{Reader, put_str};
use crate::{CacheKey, CacheKeyBuilder, ObjectBytes, ObjectCache};

pub(crate) enum UnitSource {
    Ir(IrInput),
    Built(ModuleBuilder),
}

/// IR that can be read again, on any thread (partitions each read the module).
#[derive(Clone)]
pub(crate) enum IrInput {
    Bitcode(Arc<[u8]>),
    Text(Arc<[u8]>),
}

impl IrInput {
    pub(crate) fn from_source(source: IrSource) -> Option<IrInput> {
        match source {
            IrSource::Bitcode(b) => Some(IrInput::Bitcode(b)),
            IrSource::Text(t) => Some(IrInput::Text(t)),
            IrSource::Built { .. } => None,
        }
    }

    pub(crate) fn source(&self) -> IrSource {
        match self {
            IrInput::Bitcode(b) => IrSource::Bitcode(b.clone()),
            IrInput::Text(t) => IrSource::Text(t.clone()),
        }
    }

    pub(crate) fn bytes(&self) -> (&str, &[u8]) {
        match self {
            IrInput::Bitcode(b) => ("bitcode", b),
            IrInput::Text(t) => ("text", t),
        }
    }
}

/// A module waiting to be compiled.
pub(crate) struct IrUnit {
    pub shared: Arc<IrShared>,
    pub name: String,
    pub source: UnitSource,
    pub interface: Interface,
    pub transforms: Arc<[Arc<dyn IrTransform>]>,
    /// Its place in link order (reserved when it was added), which orders its initializers.
    pub order: u64,
    /// Relocatable objects linked in the same graph as the module's object.
    pub objects: Vec<(String, ObjectBytes)>,
    pub discarded: FxHashSet<String>,
}

impl MaterializationUnit for IrUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        let IrUnit { shared, name, source, transforms, order, objects, discarded, .. } = *self;
        let keep: FxHashSet<String> = mr.symbols().map(|(n, _)| n.as_str().to_string()).collect();
        let job = Arc::new(Job { shared, name, transforms, keep, order, objects, discarded });
        let _span = tracing::debug_span!(target: "orcjit", "compile", module = %job.name).entered();
        match source {
            UnitSource::Built(build) => job.run_built(build, mr),
            UnitSource::Ir(ir) => job.run_ir(ir, mr),
        }
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
        self.discarded.insert(name.as_str().to_string());
    }
}

/// Local names to restore on the object: `(canonical, original)`.
type Renames = Vec<(String, String)>;

/// Compiling one unit; shared (behind an `Arc`) by the tasks of its partitions.
struct Job {
    shared: Arc<IrShared>,
    name: String,
    transforms: Arc<[Arc<dyn IrTransform>]>,
    keep: FxHashSet<String>,
    order: u64,
    /// Linked with the module's object as one graph; the module is then compiled whole.
    objects: Vec<(String, ObjectBytes)>,
    discarded: FxHashSet<String>,
}

impl Job {
    fn cache(&self) -> Option<&ObjectCache> {
        self.shared.cache.as_ref()
    }

    fn emit(&self, mr: MaterializationResponsibility, name: &str, result: Result<(Vec<u8>, Renames)>) {
        match result {
            Ok((object, renames)) if self.objects.is_empty() => {
                self.shared.objects.emit_in_order(mr, name, &object, renames, self.order)
            }
            Ok((object, renames)) => {
                let session = self.shared.objects.session();
                let discarded = self.discarded.iter().map(|n| session.intern(n)).collect();
                let objects = &self.objects;
                self.shared.objects.emit_with_objects(mr, (name, &object), renames, self.order, objects, discarded)
            }
            Err(e) => mr.fail(e),
        }
    }

    /// A module built by a front end: built once, so compiled whole.
    fn run_built(&self, build: ModuleBuilder, mr: MaterializationResponsibility) {
        let context = Context::create();
        let result = build(&context).map_err(|e| Error::msg(format!("{}: {e}", self.name))).and_then(|module| {
            strip_debug_info(&module);
            restrict_to(&module, &self.keep, &self.discarded);
            let renames = canonicalize_locals(&module);
            self.compile_canonical(&module, None).map(|(object, _)| (object, renames))
        });
        self.emit(mr, &self.name, result);
    }

    /// Obtains the objects of a module read from IR and links them for `mr`.
    ///
    /// The cache is read at two levels. The *input* key covers the module exactly as given
    /// (bytes, settings, what to keep and discard); its entry is a record describing the
    /// object(s), so a warm run does not read the module at all. The *canonical* key covers the
    /// module after its local names were made canonical; its entry is the object, shared by
    /// modules that differ only in local names.
    fn run_ir(self: Arc<Self>, ir: IrInput, mr: MaterializationResponsibility) {
        let input = self.cache().map(|_| self.input_key(&ir));
        if let (Some(cache), Some(key)) = (self.cache(), &input) {
            match cache.get(key).and_then(|r| Record::decode(&r)) {
                Some(Record::Whole { object, renames }) => {
                    if let Some(bytes) = cache.get(&object) {
                        return self.emit(mr, &self.name, Ok((bytes, renames)));
                    }
                }
                // A module linked with objects is linked whole (as it is stored below).
                Some(Record::Split { promoted, parts }) if self.objects.is_empty() => {
                    let k = parts.len();
                    let objects: Option<Vec<Vec<u8>>> = (0..k).map(|i| cache.get(&part_key(key, i, k))).collect();
                    if let Some(objects) = objects {
                        return self.link_split(mr, &promoted, &parts, objects);
                    }
                }
                _ => {}
            }
        }
        let context = Context::create();
        let (module, had_debug_info) = match parse_stripped(&context, &self.name, &ir.source()) {
            Ok(read) => read,
            Err(e) => return mr.fail(e),
        };
        let threads = self.shared.objects.session().dispatcher().concurrency();
        // Partitions read the module again: without its debug info, if it had some.
        let reread = if had_debug_info && self.objects.is_empty() && split_count(&module, threads) > 1 {
            IrInput::Bitcode(stripped_bitcode(&module))
        } else {
            ir.clone()
        };
        restrict_to(&module, &self.keep, &self.discarded);
        let renames = canonicalize_locals(&module);
        let k = if self.objects.is_empty() { split_count(&module, threads) } else { 1 };
        if k < 2 {
            let result = self.compile_canonical(&module, input.as_ref()).map(|(object, canonical)| {
                if let (Some(cache), Some(key), Some(object_key)) = (self.cache(), &input, canonical) {
                    self.store(cache, key, &Record::Whole { object: object_key, renames: renames.clone() }.encode());
                }
                (object, renames)
            });
            return self.emit(mr, &self.name, result);
        }
        self.split(&ir, &reread, &module, k, input, mr);
    }

    /// Takes the object of `module` (restricted, canonical) from the cache, or verifies,
    /// transforms and compiles it and stores it. Returns it with its canonical key.
    fn compile_canonical(&self, module: &Module<'_>, input: Option<&CacheKey>) -> Result<(Vec<u8>, Option<CacheKey>)> {
        let names: Vec<&str> = self.transforms.iter().map(|t| t.name()).collect();
        let canonical = input.map(|_| cache_key(module, &self.shared.options, &names));
        let key = canonical.or_else(|| self.cache().map(|_| cache_key(module, &self.shared.options, &names)));
        let object = self.object_for(module, &self.name, key.as_ref())?;
        Ok((object, key))
    }

    /// The object of `module` under `key` in the cache, or compiled (and stored there).
    fn object_for(&self, module: &Module<'_>, name: &str, key: Option<&CacheKey>) -> Result<Vec<u8>> {
        if let (Some(cache), Some(key)) = (self.cache(), key) {
            if let Some(object) = cache.get(key) {
                return Ok(object);
            }
        }
        module.verify().map_err(|e| Error::msg(format!("{name}: invalid module: {}", e.to_string().trim_end())))?;
        let object = compile_with(module, name, &self.shared.options, |module, machine| {
            self.transforms.iter().try_for_each(|t| {
                t.transform(module, machine).map_err(|e| Error::msg(format!("{name}: {}: {e}", t.name())))
            })
        })?;
        if let (Some(cache), Some(key)) = (self.cache(), key) {
            self.store(cache, key, &object);
        }
        Ok(object)
    }

    /// Splits the module into `k` partitions: locals become hidden globals (so partitions reach
    /// each other's), the responsibility takes them on and is split by partition, partitions
    /// 1.. compile on other threads (each reading the module again, from `reread`, in its own
    /// context) and partition 0 here. `ir` is the module as added, which names the locals.
    fn split(
        self: Arc<Self>,
        ir: &IrInput,
        reread: &IrInput,
        module: &Module<'_>,
        k: usize,
        input: Option<CacheKey>,
        mut mr: MaterializationResponsibility,
    ) {
        tracing::debug!(target: "orcjit", module = %self.name, parts = k, "split for parallel compilation");
        let tag = content_tag(ir);
        let promoted = promote_locals(module, &tag);
        let plan = Arc::new(plan(module, k, promoted));
        let parts: Vec<Vec<String>> = (0..k).map(|i| defined_names(module, &plan, i)).collect();
        let mut mrs = match self.split_responsibility(&mut mr, &plan.promoted, &parts) {
            Ok(mrs) => mrs,
            Err(e) => return mr.fail(e),
        };
        if let (Some(cache), Some(key)) = (self.cache(), &input) {
            self.store(cache, key, &Record::Split { promoted: plan.promoted.clone(), parts }.encode());
        }
        let session = self.shared.objects.session().clone();
        for (i, part_mr) in (1..k).zip(mrs.drain(..)) {
            let (job, ir, plan, tag) = (self.clone(), reread.clone(), plan.clone(), tag.clone());
            let priority = part_mr.priority();
            session.dispatch(Task::new(TaskKind::Materialization, priority, move || {
                let context = Context::create();
                let name = format!("{}#{i}", job.name);
                let _span = tracing::debug_span!(target: "orcjit", "compile", module = %name).entered();
                let result = parse(&context, &job.name, &ir.source()).and_then(|module| {
                    restrict_to(&module, &job.keep, &job.discarded);
                    canonicalize_locals(&module);
                    promote_locals(&module, &tag);
                    job.partition_object(&module, &plan, i, input.as_ref())
                });
                job.emit(part_mr, &name, result.map(|object| (object, Vec::new())));
            }));
        }
        let result = self.partition_object(module, &plan, 0, input.as_ref());
        self.emit(mr, &format!("{}#0", self.name), result.map(|object| (object, Vec::new())));
    }

    fn partition_object(
        &self,
        module: &Module<'_>,
        plan: &super::partition::SplitPlan,
        part: usize,
        input: Option<&CacheKey>,
    ) -> Result<Vec<u8>> {
        keep_partition(module, plan, part);
        let key = input.map(|key| part_key(key, part, plan.parts.len()));
        self.object_for(module, &format!("{}#{part}", self.name), key.as_ref())
    }

    /// Adds the promoted symbols to `mr` and splits off one responsibility per partition after
    /// the first, which `mr` keeps (with whatever no partition names, such as an init symbol).
    fn split_responsibility(
        &self,
        mr: &mut MaterializationResponsibility,
        promoted: &[(String, bool)],
        parts: &[Vec<String>],
    ) -> Result<Vec<MaterializationResponsibility>> {
        let session = self.shared.objects.session();
        let flags = |function: bool| if function { SymbolFlags::CALLABLE } else { SymbolFlags::empty() };
        mr.define_materializing(promoted.iter().map(|(n, f)| (session.intern(n), flags(*f))))?;
        parts[1..]
            .iter()
            .map(|names| {
                let mine: Vec<SymbolName> =
                    names.iter().map(|n| session.intern(n)).filter(|n| mr.contains(n)).collect();
                mr.delegate(&mine)
            })
            .collect()
    }

    /// A warm run of a split module: the same responsibilities, the cached objects.
    fn link_split(
        &self,
        mut mr: MaterializationResponsibility,
        promoted: &[(String, bool)],
        parts: &[Vec<String>],
        objects: Vec<Vec<u8>>,
    ) {
        let mut mrs = match self.split_responsibility(&mut mr, promoted, parts) {
            Ok(mrs) => mrs,
            Err(e) => return mr.fail(e),
        };
        let mut objects = objects.into_iter();
        let first = objects.next().unwrap_or_default();
        for (i, (part_mr, object)) in mrs.drain(..).zip(objects).enumerate() {
            self.emit(part_mr, &format!("{}#{}", self.name, i + 1), Ok((object, Vec::new())));
        }
        self.emit(mr, &format!("{}#0", self.name), Ok((first, Vec::new())));
    }

    fn input_key(&self, source: &IrInput) -> CacheKey {
        let (kind, bytes) = source.bytes();
        let sorted = |set: &FxHashSet<String>| {
            let mut names: Vec<&str> = set.iter().map(String::as_str).collect();
            names.sort_unstable();
            names.join("\n")
        };
        let mut key = CacheKeyBuilder::new()
            .part("input record", b"v2")
            .part("settings", settings_id(&self.shared.options).as_bytes());
        for t in self.transforms.iter() {
            key = key.part("transform", t.name().as_bytes());
        }
        key.part("keep", sorted(&self.keep).as_bytes())
            .part("discard", sorted(&self.discarded).as_bytes())
            .part(kind, bytes)
            .finish()
    }

    fn store(&self, cache: &ObjectCache, key: &CacheKey, bytes: &[u8]) {
        // A cache that cannot store is a slower JIT, not a broken one.
        if let Err(e) = cache.put(key, bytes) {
            tracing::warn!(target: "orcjit", module = %self.name, "not cached: {e}");
        }
    }
}

/// A name part derived from the module's content, for the globals its locals become: equal
/// inputs get equal names (as their other symbols are equal too), different ones do not clash.
pub(crate) fn content_tag(source: &IrInput) -> String {
    let (_, bytes) = source.bytes();
    CacheKeyBuilder::new().part("promoted locals", bytes).finish().to_string()[..16].to_string()
}

/// The cache key of partition `part` of `k` of the input with key `input`.
fn part_key(input: &CacheKey, part: usize, k: usize) -> CacheKey {
    CacheKeyBuilder::new()
        .part("partition of", input.as_bytes())
        .part("index", &(part as u64).to_le_bytes())
        .part("count", &(k as u64).to_le_bytes())
        .finish()
}

/// What the cache records under an input key.
enum Record {
    /// One object (under its canonical key) and the local names to restore.
    Whole { object: CacheKey, renames: Renames },
    /// A split module: the locals made global (each with whether it is a function), and the
    /// names each partition defines; the objects are under `part_key`s.
    Split { promoted: Vec<(String, bool)>, parts: Vec<Vec<String>> },
}

const WHOLE_MAGIC: &[u8; 8] = b"ORCJITIR";
const SPLIT_MAGIC: &[u8; 8] = b"ORCJITSP";

impl Record {
    /// Little-endian; every string as a u32 length and its bytes.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put = put_str;
        match self {
            Record::Whole { object, renames } => {
                out.extend_from_slice(WHOLE_MAGIC);
                out.extend_from_slice(object.as_bytes());
                out.extend_from_slice(&(renames.len() as u32).to_le_bytes());
                for (from, to) in renames {
                    put(&mut out, from);
                    put(&mut out, to);
                }
            }
            Record::Split { promoted, parts } => {
                out.extend_from_slice(SPLIT_MAGIC);
                out.extend_from_slice(&(promoted.len() as u32).to_le_bytes());
                for (name, function) in promoted {
                    out.push(u8::from(*function));
                    put(&mut out, name);
                }
                out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
                for names in parts {
                    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
                    for name in names {
                        put(&mut out, name);
                    }
                }
            }
        }
        out
    }

    /// The inverse of `encode`; `None` for anything malformed (then it is a miss).
    fn decode(bytes: &[u8]) -> Option<Record> {
        let mut r = Reader(bytes);
        let magic = r.take(8)?;
        if magic == WHOLE_MAGIC {
            let object = CacheKey::from_bytes(r.take(CacheKey::LEN)?.try_into().ok()?);
            let renames = (0..r.u32()?).map(|_| Some((r.string()?, r.string()?))).collect::<Option<Vec<_>>>()?;
            return r.is_empty().then_some(Record::Whole { object, renames });
        }
        if magic != SPLIT_MAGIC {
            return None;
        }
        let promoted = (0..r.u32()?).map(|_| Some((r.take(1)?[0] != 0, r.string()?))).collect::<Option<Vec<_>>>()?;
        let promoted = promoted.into_iter().map(|(f, n)| (n, f)).collect();
        let parts = (0..r.u32()?)
            .map(|_| (0..r.u32()?).map(|_| r.string()).collect::<Option<Vec<_>>>())
            .collect::<Option<Vec<_>>>()?;
        (r.is_empty() && !parts.is_empty()).then_some(Record::Split { promoted, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_damage() {
        let whole = Record::Whole {
            object: CacheKey::from_bytes([7; 32]),
            renames: vec![("__orcjit.l0".into(), "helper".into())],
        };
        let split = Record::Split {
            promoted: vec![("__orcjit.t.l0".into(), true), ("__orcjit.t.l1".into(), false)],
            parts: vec![vec!["main".into(), "table".into()], vec!["f".into()]],
        };
        for record in [whole, split] {
            let bytes = record.encode();
            let back = Record::decode(&bytes).expect("round trip");
            assert_eq!(back.encode(), bytes);
            for cut in 0..bytes.len() {
                assert!(Record::decode(&bytes[..cut]).is_none(), "a record cut at {cut} must not parse");
            }
        }
        assert!(Record::decode(b"NOTMAGIC").is_none());
    }
}
