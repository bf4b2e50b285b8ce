pub mod embed;
pub mod index;
pub mod search;
pub mod status;
