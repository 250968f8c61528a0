//! A builder that fails part-way ends the session it had started: no worker thread outlives
//! the error. (Alone in its test binary, so that no other test's threads come and go while it
//! counts this process's threads.)

mod common;

use jit_layers::{Jit, ObjectJit};

use common::watchdog;

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").expect("/proc/self/task").count()
}

#[test]
fn a_build_that_fails_leaves_no_worker_thread_behind() {
    let _w = watchdog("ending the sessions of failed builds");
    let before = threads_of_this_process();
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_directory = file.path().join("cache");
    for _ in 0..4 {
        let Err(e) = ObjectJit::builder().threads(2).dlopen("liborcjit-no-such-library.so").build() else {
            panic!("loading a library that does not exist succeeded");
        };
        assert!(e.to_string().contains("liborcjit-no-such-library.so"), "{e}");
        // Fails after the object half is built: in the IR half, at the cache.
        let Err(e) = Jit::builder().threads(2).cache(&not_a_directory).build() else {
            panic!("a cache under a regular file opened");
        };
        assert!(e.to_string().contains("cache"), "{e}");
    }
    assert_eq!(threads_of_this_process(), before, "worker threads of failed builds are still running");
}
