// Placeholder (issue 10): filled in by the bad_input tests.
#include <gtest/gtest.h>
