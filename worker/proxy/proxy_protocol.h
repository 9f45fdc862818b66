// Placeholder: filled in by the proxy_protocol work of issue 8.
#pragma once
