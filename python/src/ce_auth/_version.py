"""The package version (kept in step with the Rust crate's)."""

__version__ = "0.1.0"
