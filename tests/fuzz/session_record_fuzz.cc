// Fuzz target: the decoders of a moved session's record (worker/proxy/session_record.h), which
// read what another process sent. Whatever the input, decode_batch() and decode_answers() either
// refuse it with a reason and hand out nothing, or accept it; what they accept encodes back to
// the very same bytes (the wire form has one encoding per value) and decodes to equal records.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_check.h"
#include "worker/proxy/session_record.h"

namespace {

namespace w = ferry::worker;

// Decodes `data` as a list of T; what is taken must encode back to `data` and decode again to
// the same list.
template <typename T, typename Encode>
void check(std::span<const std::byte> data,
           bool (*decode)(std::span<const std::byte>, std::vector<T>&, std::string&),
           Encode&& encode) {
  std::vector<T> items;
  std::string why;
  if (!decode(data, items, why)) {
    FUZZ_CHECK(!why.empty() && items.empty());
    return;
  }
  FUZZ_CHECK(why.empty());
  std::vector<std::byte> again;
  encode(items, again);
  // An older version's batch is encoded in the current one: the same records, other bytes.
  if (data[1] == again[1])
    FUZZ_CHECK(std::equal(again.begin(), again.end(), data.begin(), data.end()));
  std::vector<T> back;
  FUZZ_CHECK(decode(again, back, why));
  FUZZ_CHECK(back == items);
}

void encode_batch(const std::vector<w::SessionRecord>& records, std::vector<std::byte>& out) {
  w::begin_batch(out);
  for (const auto& r : records) {
    const std::size_t before = out.size();
    w::append_record(out, r);
    FUZZ_CHECK(out.size() - before == w::encoded_size(r));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::span<const std::byte> data(reinterpret_cast<const std::byte*>(bytes), size);
  check<w::SessionRecord>(data, w::decode_batch, encode_batch);
  check<w::MoveAnswer>(data, w::decode_answers, w::encode_answers);
  return 0;
}
