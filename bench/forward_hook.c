/* A PEP 445 allocator hook that only forwards to the allocator it wraps: the floor of any
 * hook of the OBJ and MEM domains (one more indirect call per allocation and per free), for
 * bench/native_overhead.py --decompose. Built by that script with the running interpreter's
 * headers; not part of the layer. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyMemAllocatorEx wrapped[2];

static void *forward_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *p = ctx;
    return p->malloc(p->ctx, size);
}

static void *forward_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *p = ctx;
    return p->calloc(p->ctx, nelem, elsize);
}

static void *forward_realloc(void *ctx, void *ptr, size_t size)
{
    PyMemAllocatorEx *p = ctx;
    return p->realloc(p->ctx, ptr, size);
}

static void forward_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *p = ctx;
    p->free(p->ctx, ptr);
}

static PyObject *install(PyObject *self, PyObject *unused)
{
    static const PyMemAllocatorDomain domains[2] = {PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    for (int i = 0; i < 2; i++) {
        PyMem_GetAllocator(domains[i], &wrapped[i]);
        PyMemAllocatorEx hook = {&wrapped[i], forward_malloc, forward_calloc, forward_realloc,
                                 forward_free};
        PyMem_SetAllocator(domains[i], &hook);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, "Wraps the MEM and OBJ domains, forwarding only."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_forward_hook", NULL, -1, methods};

PyMODINIT_FUNC PyInit__forward_hook(void) { return PyModule_Create(&module); }
