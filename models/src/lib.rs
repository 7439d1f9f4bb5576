//! Model checks of the protocols (stateright). Empty for now; the replication and group issues
//! fill it as their state machines land.
