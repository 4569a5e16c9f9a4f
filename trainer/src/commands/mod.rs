pub mod demo;
pub mod eval;
pub mod download;
pub mod import;
pub mod predict;
pub mod preprocess;
pub mod score;
pub mod train;
