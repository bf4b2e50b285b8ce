pub mod embed;
pub mod eval;
pub mod export;
pub mod index;
pub mod models;
pub mod search;
pub mod serve;
pub mod status;
