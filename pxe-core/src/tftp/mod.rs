//! TFTP read-only server session state machine.
