//! Inventory (placeholder)
