// Field: one setting of a group, described once — its name, how it is read, how it is printed
// — so that the group's table is the list of names the reader accepts, what it reads and what
// `ferry -T` prints, in one place (as nginx's ngx_command_t arrays are).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/names.h"
#include "conf/reader.h"
#include "conf/writer.h"

namespace ferry::conf {

template <typename T>
struct Field {
  std::string_view name;
  // Reads the setting into `out` (called only when the group has it).
  void (*read)(Reader& r, const Setting& s, T& out);
  // Prints its value; null for a setting the group's printer writes itself.
  void (*print)(Writer& w, std::string_view name, const T& value);
  // Why it must be given, for one that must (reported at the group when absent); else null.
  const char* required = nullptr;
};

// Reads field `f` if `group` has it (or says it is missing, if it must be given).
template <typename T>
void read_field(Reader& r, const Setting& group, const Field<T>& f, T& out) {
  const std::string name(f.name);
  if (const Setting* s = Reader::member(group, name.c_str())) {
    f.read(r, *s, out);
  } else if (f.required != nullptr) {
    r.missing(group, name, f.required);
  }
}

// Reads every field `group` has, in the table's order, after checking that it has no other —
// but those named in `later`, which the caller reads itself afterwards (with read_field()):
// messages on one line come in the order the settings are read.
template <typename T>
void read_fields(Reader& r, const Setting& group, std::span<const Field<T>> fields, T& out,
                 std::span<const std::string_view> later = {}) {
  std::vector<std::string_view> names;
  names.reserve(fields.size());
  for (const auto& f : fields) names.push_back(f.name);
  r.only(group, names);
  for (const auto& f : fields) {
    if (std::find(later.begin(), later.end(), f.name) == later.end()) read_field(r, group, f, out);
  }
}

// The field of `fields` named `name` (which must be there).
template <typename T>
const Field<T>& field_named(std::span<const Field<T>> fields, std::string_view name) {
  return *std::find_if(fields.begin(), fields.end(),
                       [&](const Field<T>& f) { return f.name == name; });
}

template <typename T>
void print_fields(Writer& w, std::span<const Field<T>> fields, const T& value) {
  for (const auto& f : fields) {
    if (f.print != nullptr) f.print(w, f.name, value);
  }
}

// A group printed as NAME = { ... };.
template <typename T>
void print_group(Writer& w, std::string_view name, std::span<const Field<T>> fields,
                 const T& value) {
  w.open(std::string(name) + " = {");
  print_fields<T>(w, fields, value);
  w.close("};");
}

// A list ( { ... }, ... ) printed a group per element, `each` writing one's settings.
template <typename T, typename Each>
void print_list(Writer& w, std::string_view name, const std::vector<const T*>& items, Each&& each) {
  w.open(std::string(name) + " = (");
  for (std::size_t i = 0; i < items.size(); ++i) {
    w.open("{");
    each(*items[i]);
    w.close(i + 1 < items.size() ? "}," : "}");
  }
  w.close(");");
}

template <typename T>
std::vector<const T*> all_of(const std::vector<T>& items) {
  std::vector<const T*> out;
  for (const T& item : items) out.push_back(&item);
  return out;
}

// ---- the usual kinds of field, by the member they fill -----------------------------------

template <typename M>
struct MemberOf;
template <typename T, typename V>
struct MemberOf<V T::*> {
  using Owner = T;
  using Value = V;
};
template <auto M>
using OwnerOf = typename MemberOf<decltype(M)>::Owner;

template <auto M>
constexpr Field<OwnerOf<M>> bool_field(std::string_view name) {
  return {name, [](Reader& r, const Setting& s, OwnerOf<M>& o) { assign(o.*M, r.boolean(s)); },
          [](Writer& w, std::string_view n, const OwnerOf<M>& o) { w.set(n, o.*M); }};
}

template <auto M, int Min, int Max>
constexpr Field<OwnerOf<M>> int_field(std::string_view name) {
  return {name,
          [](Reader& r, const Setting& s, OwnerOf<M>& o) { assign(o.*M, r.int32(s, Min, Max)); },
          [](Writer& w, std::string_view n, const OwnerOf<M>& o) { w.set(n, o.*M); }};
}

// A duration of at least MinMs milliseconds.
template <auto M, long MinMs = 0>
constexpr Field<OwnerOf<M>> duration_field(std::string_view name) {
  return {
      name,
      [](Reader& r, const Setting& s, OwnerOf<M>& o) { assign(o.*M, r.duration(s, Msec{MinMs})); },
      [](Writer& w, std::string_view n, const OwnerOf<M>& o) { w.set_duration(n, o.*M); }};
}

template <auto M, bool AllowEmpty = true>
constexpr Field<OwnerOf<M>> string_field(std::string_view name) {
  return {name,
          [](Reader& r, const Setting& s, OwnerOf<M>& o) { assign(o.*M, r.string(s, AllowEmpty)); },
          [](Writer& w, std::string_view n, const OwnerOf<M>& o) { w.set_string(n, o.*M); }};
}

// One of the names of `Table` (conf/names.h).
template <auto M, const auto& Table>
constexpr Field<OwnerOf<M>> choice_field(std::string_view name) {
  using E = typename MemberOf<decltype(M)>::Value;
  return {name,
          [](Reader& r, const Setting& s, OwnerOf<M>& o) {
            assign(o.*M, r.choice<E>(s, std::span<const Named<E>>(Table)));
          },
          [](Writer& w, std::string_view n, const OwnerOf<M>& o) {
            w.set_string(n, name_in<E>(Table, o.*M));
          }};
}

}  // namespace ferry::conf
