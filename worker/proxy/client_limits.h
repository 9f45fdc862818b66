// Placeholder: filled in by the client_limits work of issue 8.
#pragma once
