//! The smallest weir plugin: one task that greets.

/// Greets `name`.
#[weir::task(version = "1.0")]
fn hello(name: String) -> String {
    weir::info!("greeting {name}");
    format!("Hello, {name}!")
}

weir::export!(hello);
