// Registers sentry_ops._C.crypto (see bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

void sentry_register_crypto(pybind11::module_& m);
