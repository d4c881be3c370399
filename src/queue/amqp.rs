//! RabbitMQ backend (lapin). Placeholder until implemented.
