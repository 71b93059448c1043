//! Test plugin: a valid component of the wrong world (`weir:other/greeter`, see
//! `wit/greeter.wit`), so the host's admission check can be tested to refuse it.

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "greeter",
    });
}

/// Implements the `greeter` world.
pub struct Greeter;

impl bindings::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

#[allow(unsafe_code)]
mod export {
    use super::{Greeter, bindings};
    bindings::export!(Greeter with_types_in bindings);
}
