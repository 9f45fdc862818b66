// Placeholder: filled in by the access_rules work of issue 8.
#pragma once
