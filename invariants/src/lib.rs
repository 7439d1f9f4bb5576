//! History checkers (Jepsen's Kafka checks): lost writes, inconsistent offsets, duplicates,
//! aborted reads, order. Empty for now; the simulation issue fills it.
