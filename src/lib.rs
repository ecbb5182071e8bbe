//! lambda-memory-profiler: an AWS Lambda extension that joins the platform's memory figures, the
//! runtime's `/proc` figures and the Python decorator's measurements into one record per invocation.
