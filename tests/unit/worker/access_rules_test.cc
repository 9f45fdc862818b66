// Placeholder: filled in by the access_rules work of issue 8.
#include <gtest/gtest.h>
TEST(Placeholder, Empty) {}
