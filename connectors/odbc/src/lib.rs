//! ODBC sources through odbc-api (work in progress).
