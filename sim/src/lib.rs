//! Deterministic simulation of the broker's sans-IO cores and of the whole server.
//!
//! Empty for now: the simulation issue fills it with a seeded stepper over the cores (using the
//! in-memory storage with faults, `broker::storage::MemStorage`) and a turmoil harness over the
//! real server shell. The seams it needs already exist: the `Storage` trait and the `Clock` trait.
