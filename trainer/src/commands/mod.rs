pub mod import;
pub mod predict;
pub mod preprocess;
