//! The cluster layer over the metadata quorum: what the active controller decides.

pub mod controller;
