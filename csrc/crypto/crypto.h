// Sentry's signature crypto (ECDSA P-256/384/521 through OpenSSL, DSSE PAE, X.509 chains).
// The declarations live in the public header, so that LibTorch programs get them from
// <sentry/crypto.h>; sources under csrc/ include this file.
#pragma once

#include "../include/sentry/crypto.h"
