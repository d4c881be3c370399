//! Provider simulator. Placeholder until implemented.
