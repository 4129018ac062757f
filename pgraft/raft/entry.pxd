# cython: language_level=3
# Typed layout of pgraft/raft/entry.py when it is compiled (see progress.pxd).

from pgraft._core cimport entry_index, entry_size, entry_term

cpdef long long index_of(object e) except? -1
cpdef long long term_of(object e) except? -1
cpdef Py_ssize_t size_of(object e) except -1
