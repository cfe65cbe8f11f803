//! The public size classes (seed 000's fixed price grid): every input is
//! padded to an input class and every output to an output class, so every
//! job of one (input class, output class) cell looks alike on the network.

/// Input classes, in tokens.
pub const INPUT_CLASSES: [u32; 5] = [256, 512, 1024, 2048, 4096];
/// Output classes, in items (generated tokens, or embedding dimensions).
pub const OUTPUT_CLASSES: [u32; 4] = [256, 512, 1024, 2048];

/// The smallest class of `table` that holds `items`, if any does.
pub fn class_for(table: &[u32], items: usize) -> Option<u32> {
    table.iter().copied().find(|&c| c as usize >= items)
}

/// Whether `class` is one of `table`'s.
pub fn is_class(table: &[u32], class: u32) -> bool {
    table.contains(&class)
}
