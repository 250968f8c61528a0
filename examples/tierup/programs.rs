//! The built-in programs, each with the argument its `main` gets unless told otherwise.

pub struct Builtin {
    pub name: &'static str,
    pub about: &'static str,
    pub arg: i64,
    pub source: &'static str,
}

pub const PROGRAMS: [Builtin; 4] = [
    Builtin {
        name: "fib",
        about: "naive recursive Fibonacci: a function calling itself, millions of times",
        arg: 32,
        source: "\
fn fib(n) {
    if n < 2 { return n; }
    return fib(n - 1) + fib(n - 2);
}

fn main(n) { return fib(n); }
",
    },
    Builtin {
        name: "sum",
        about: "loop-heavy: a function with a 1000-step loop, called n times from a loop",
        arg: 20000,
        source: "\
// The sum over i < n of the sum over j < 1000 of (i * j) % 7 - j / 3.
fn row(i) {
    let s = 0;
    let j = 0;
    while j < 1000 {
        s = s + i * j % 7 - j / 3;
        j = j + 1;
    }
    return s;
}

fn main(n) {
    let total = 0;
    let i = 0;
    while i < n {
        total = total + row(i);
        i = i + 1;
    }
    return total;
}
",
    },
    Builtin {
        name: "evenodd",
        about: "mutual recursion: is_even and is_odd, compiled one after the other",
        arg: 20000,
        source: "\
fn is_even(n) { if n == 0 { return 1; } return is_odd(n - 1); }
fn is_odd(n) { if n == 0 { return 0; } return is_even(n - 1); }

// How many of (i * 7919) % 1000, for i < n, are even.
fn main(n) {
    let evens = 0;
    let i = 0;
    while i < n {
        evens = evens + is_even(i * 7919 % 1000);
        i = i + 1;
    }
    return evens;
}
",
    },
    Builtin {
        name: "collatz",
        about: "loops and branches: the longest Collatz chain from a start below n (prints the start)",
        arg: 100000,
        source: "\
fn steps(x) {
    let s = 0;
    while x != 1 {
        if x % 2 == 0 { x = x / 2; } else { x = 3 * x + 1; }
        s = s + 1;
    }
    return s;
}

fn main(n) {
    let best = 0;
    let start = 1;
    let i = 1;
    while i < n {
        let s = steps(i);
        if s > best {
            best = s;
            start = i;
        }
        i = i + 1;
    }
    print(start);
    return best;
}
",
    },
];

pub fn find(name: &str) -> Option<&'static Builtin> {
    PROGRAMS.iter().find(|p| p.name == name)
}
