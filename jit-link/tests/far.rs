//! Far references of non-PIC code, in this process: libc's data read through read-only copies
//! and libc's functions reached through stubs, in a second allocation that lives and dies
//! with the graph's on every manager; and the cases that must be errors.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::*;
use jit_link::{ExternalDefinition, LinkContext, LinkError, LinkedObject, LookupContinuation, LookupRequest};
use jit_mem::{LOW_PLACEMENT_LIMIT, ManagerConfig, MemoryManager, Placement, TargetAddr, maps};

const SOURCE: &str = r#"
#include <stdio.h>
#include <string.h>
FILE *get_stdout(void) { return stdout; }
FILE **stdout_address(void) { return &stdout; }
size_t (*get_strlen(void))(const char *) { return strlen; }
"#;

fn nopic_object(name: &str, source: &str, opt: &str) -> (String, Vec<u8>) {
    let dir = work_dir("far");
    let src = dir.join(format!("{name}{opt}.c"));
    let obj = dir.join(format!("{name}{opt}.o"));
    std::fs::write(&src, source).expect("write source");
    clang(&["-c", opt, "-fno-pic", "-mcmodel=small", &src.to_string_lossy(), "-o", &obj.to_string_lossy()]);
    (format!("{name}.o"), std::fs::read(&obj).expect("object"))
}

fn low(name: &str) -> Arc<dyn MemoryManager> {
    let config = ManagerConfig::with_reservation(64 << 20).with_placement(Placement::Low);
    jit_mem::manager_by_name(name, config).expect("known manager").expect("low manager")
}

fn call<T>(addr: TargetAddr) -> T {
    // SAFETY: the callers pass finalized functions of the test's source that take no
    // arguments and return a T-sized value.
    let f: extern "C" fn() -> T = unsafe { std::mem::transmute(addr.0 as usize) };
    f()
}

#[test]
fn libc_data_is_read_through_a_read_only_copy_and_functions_through_stubs_on_every_manager() {
    let _watchdog = Watchdog::start(Duration::from_secs(120), "far references");
    let libc_stdout = dlsym("stdout").expect("libc stdout");
    // SAFETY: libc's `stdout`, a pointer-sized variable.
    let stdout_now = unsafe { *(libc_stdout.0 as usize as *const usize) };
    for name in ["dual", "mprotect", "mprotect-in-place", "page"] {
        for opt in ["-O1", "-O0"] {
            let mm = low(name);
            let (graph_name, bytes) = nopic_object("far", SOURCE, opt);
            let graph = jit_link::graph_from_elf_object(&graph_name, &bytes).unwrap();
            let (batch, results) = link_graphs_into(vec![graph], None, mm.clone());
            let linked = results.into_iter().next().unwrap().expect("links");
            assert_eq!(mm.stats().allocations, 2, "{name}{opt}: the graph's allocation and the stand-ins'");
            let at = |s: &str| batch.address_of(s).unwrap_or_else(|| panic!("{s}"));

            assert_eq!(call::<usize>(at("get_stdout")), stdout_now, "{name}{opt}: the copy holds stdout's value");
            // -O1 takes addresses as 32-bit immediates (a copy and a stub); -O0 as 64-bit ones
            // (movabs: libc's own addresses, which need no stand-in).
            let copy = call::<usize>(at("stdout_address")) as u64;
            let stub = call::<usize>(at("get_strlen"));
            if opt == "-O1" {
                assert!(copy < LOW_PLACEMENT_LIMIT && copy != libc_stdout.0, "{name}{opt}: {copy:#x}");
                let maps = maps::process_mappings().unwrap();
                let mapping = maps.into_iter().find(|m| m.range.contains(&copy)).unwrap();
                assert!(mapping.read && !mapping.write && !mapping.exec, "{name}{opt}: read-only copy: {mapping:?}");
                assert!((stub as u64) < LOW_PLACEMENT_LIMIT, "{name}{opt}: the stub stands for strlen in reach");
            } else {
                assert_eq!(copy, libc_stdout.0, "{name}{opt}");
            }
            // SAFETY: the stub jumps to libc's strlen (or it is strlen).
            let strlen: extern "C" fn(*const std::ffi::c_char) -> usize = unsafe { std::mem::transmute(stub) };
            assert_eq!(strlen(c"far away".as_ptr()), 8, "{name}{opt}");

            drop(linked);
            assert_eq!(mm.stats().allocations, 0, "{name}{opt}: the stand-ins went with the graph");
        }
    }
}

#[test]
fn many_graphs_with_far_references_link_on_several_threads_at_once() {
    // The two allocations of each graph finalize side by side; with the mprotect manager
    // sealing in place one may complete only when another allocation on its page finalizes,
    // perhaps on another thread, and no finalize may wait for another.
    let _watchdog = Watchdog::start(Duration::from_secs(120), "parallel far references");
    let (_, bytes) = nopic_object("far", SOURCE, "-O1");
    for name in ["mprotect-in-place", "mprotect", "dual"] {
        let mm = low(name);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (mm, bytes) = (mm.clone(), bytes.clone());
                std::thread::spawn(move || {
                    let (tx, rx) = mpsc::channel();
                    for i in 0..25 {
                        let graph = jit_link::graph_from_elf_object(&format!("far{t}-{i}.o"), &bytes).unwrap();
                        let ctx = Arc::new(ProcessContext {
                            mm: mm.clone(),
                            describe: true,
                            fail_finalize: false,
                            get_strlen: Mutex::new(None),
                            done: Mutex::new(tx.clone()),
                        });
                        jit_link::link(graph, ctx);
                    }
                    let mut held = Vec::new();
                    for _ in 0..25 {
                        let (linked, get) = rx.recv_timeout(Duration::from_secs(60)).expect("every link finishes");
                        let linked = linked.expect("links");
                        let stub = call::<usize>(get.expect("get_strlen"));
                        // SAFETY: the stub jumps to libc's strlen.
                        let strlen: extern "C" fn(*const std::ffi::c_char) -> usize =
                            unsafe { std::mem::transmute(stub) };
                        assert_eq!(strlen(c"abc".as_ptr()), 3);
                        held.push(linked);
                    }
                    held
                })
            })
            .collect();
        let held: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert_eq!(mm.stats().allocations, 200, "{name}: two allocations per graph");
        drop(held);
        assert_eq!(mm.stats().allocations, 0, "{name}: all freed");
    }
}

type Done = (Result<LinkedObject, LinkError>, Option<TargetAddr>);

/// A context over this process that reports through a channel, wherever the link finishes,
/// with the address of `get_strlen`; `describe: false` keeps `describe_external`'s default.
struct ProcessContext {
    mm: Arc<dyn MemoryManager>,
    describe: bool,
    /// Adds a finalize action that fails.
    fail_finalize: bool,
    get_strlen: Mutex<Option<TargetAddr>>,
    done: Mutex<mpsc::Sender<Done>>,
}

impl LinkContext for ProcessContext {
    fn memory_manager(&self) -> Arc<dyn MemoryManager> {
        self.mm.clone()
    }
    fn modify_pass_config(&self, _: &jit_link::LinkGraph, config: &mut jit_link::PassConfig) -> Result<(), LinkError> {
        if self.fail_finalize {
            config.add(jit_link::Phase::PostFixup, "fail_at_finalize", |g: &mut jit_link::LinkGraph| {
                g.add_finalize_action(jit_mem::FinalizeAction::on_finalize(|| Err("refused by the test".into())));
                Ok(())
            });
        }
        Ok(())
    }
    fn lookup(&self, request: LookupRequest, continuation: LookupContinuation) {
        let found: HashMap<_, _> =
            request.symbols.iter().filter_map(|(n, _)| dlsym(n.as_str()).map(|a| (n.clone(), a))).collect();
        continuation.resolve(Ok(found));
    }
    fn describe_external(&self, name: &jit_link::SymbolName, addr: TargetAddr) -> ExternalDefinition {
        if self.describe {
            jit_link::process::describe_definition(name.as_str(), addr)
        } else {
            ExternalDefinition::Unknown
        }
    }
    fn notify_resolved(&self, graph: &jit_link::LinkGraph) -> Result<(), LinkError> {
        let get = graph.find_symbol("get_strlen").and_then(|s| graph.symbol_addr(s));
        *self.get_strlen.lock().unwrap() = get;
        Ok(())
    }
    fn notify_finalized(&self, linked: LinkedObject) {
        let get = *self.get_strlen.lock().unwrap();
        let _ = self.done.lock().unwrap().send((Ok(linked), get));
    }
    fn notify_failed(&self, error: LinkError) {
        let _ = self.done.lock().unwrap().send((Err(error), None));
    }
}

#[test]
fn a_context_that_cannot_describe_an_external_makes_a_far_reference_an_error() {
    let mm = low("dual");
    let (name, bytes) = nopic_object("far", SOURCE, "-O1");
    let (tx, rx) = mpsc::channel();
    let ctx = Arc::new(ProcessContext {
        mm: mm.clone(),
        describe: false,
        fail_finalize: false,
        get_strlen: Mutex::new(None),
        done: Mutex::new(tx),
    });
    jit_link::link(jit_link::graph_from_elf_object(&name, &bytes).unwrap(), ctx);
    let (outcome, _) = rx.recv_timeout(Duration::from_secs(30)).expect("an outcome");
    let err = outcome.expect_err("must fail").to_string();
    assert!(err.starts_with("far.o: R_X86_64_PC32 at .text+0x"), "{err}");
    assert!(err.contains("refers to 'stdout'") && err.contains("cannot say whether it is code or data"), "{err}");
    assert_eq!(mm.stats().allocations, 0, "nothing is left allocated");
}

#[test]
fn a_reference_into_the_middle_of_a_far_function_is_an_error() {
    let dir = work_dir("far");
    let (s, o) = (dir.join("mid.s"), dir.join("mid.o"));
    std::fs::write(&s, "        .text\n        .globl f\nf:      movl $strlen+4, %eax\n        ret\n").expect("asm");
    clang(&["-c", &s.to_string_lossy(), "-o", &o.to_string_lossy()]);
    let objects = vec![("mid.o".to_string(), std::fs::read(&o).expect("object"))];
    let err = match link_objects(&objects) {
        Ok(_) => panic!("strlen+4 has no stand-in"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("mid.o: R_X86_64_32 at .text+0x1 (f+0x1) refers to 'strlen'"), "{err}");
    assert!(err.contains("middle of the function (addend 4)"), "{err}");
}

#[test]
fn a_failed_finalize_frees_both_allocations_before_the_context_hears() {
    for name in ["dual", "mprotect", "mprotect-in-place", "page"] {
        let mm = low(name);
        let (object, bytes) = nopic_object("far", SOURCE, "-O1");
        let (tx, rx) = mpsc::channel();
        let ctx = Arc::new(ProcessContext {
            mm: mm.clone(),
            describe: true,
            fail_finalize: true,
            get_strlen: Mutex::new(None),
            done: Mutex::new(tx),
        });
        jit_link::link(jit_link::graph_from_elf_object(&object, &bytes).unwrap(), ctx);
        let (outcome, _) = rx.recv_timeout(Duration::from_secs(30)).expect("an outcome");
        let err = outcome.expect_err("the finalize action fails").to_string();
        assert!(err.contains("far.o") && err.contains("refused by the test"), "{name}: {err}");
        assert_eq!(mm.stats().allocations, 0, "{name}: neither allocation is left");
    }
}

#[test]
fn a_pc32_call_to_a_far_function_goes_through_a_stub() {
    // Compilers call through R_X86_64_PLT32, which the GOT/PLT pass sends through a stub; an
    // R_X86_64_PC32 call (older compilers, hand-written assembly) becomes a far reference to a
    // function, which gets a stub too.
    let dir = work_dir("far");
    let (s, o) = (dir.join("pc32call.s"), dir.join("pc32call.o"));
    std::fs::write(
        &s,
        "        .text\n        .globl count\ncount:  pushq %rbx\n        leaq msg(%rip), %rdi\n\
         \x20       .byte 0xe8\n        .long strlen - . - 4\n        popq %rbx\n        ret\n\
         \x20       .section .rodata\nmsg:    .asciz \"twelve chars\"\n",
    )
    .expect("asm");
    clang(&["-c", &s.to_string_lossy(), "-o", &o.to_string_lossy()]);
    let objects = vec![("pc32call.o".to_string(), std::fs::read(&o).expect("object"))];
    let (batch, linked) = link_objects_into(&objects, low_memory()).expect("links");
    assert_eq!(call::<usize>(batch.address_of("count").expect("count")), 12);
    drop(linked);
}
