//! Go text/template subset for Modelfile TEMPLATEs (work in progress).
