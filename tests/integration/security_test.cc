// Placeholder (issue 10): filled in by the security tests.
#include <gtest/gtest.h>
