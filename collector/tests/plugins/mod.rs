//! The plugin registry: plugins enabled by name (`--plugins`), an unknown name
//! refused, a disabled plugin's programs not loaded and its metrics absent,
//! every plugin's state in the preflight's JSON and in `/metrics`, and the
//! seam itself: plugins defined here, in the test, registered beside the
//! built-in ones.

mod disabled;
mod seam;
