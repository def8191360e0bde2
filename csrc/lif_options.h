// What both front ends accept: the option names (surrogate, reset) and the
// values of decay and threshold. The TensorFlow op (lif_ops.cc) and the
// framework-free bindings (lif_bindings.cc) parse and check through these
// functions only, so they accept and reject the same inputs with the same
// words. (Python keeps its one list in fused_lif/_params.py.)
#ifndef FUSED_LIF_LIF_OPTIONS_H_
#define FUSED_LIF_LIF_OPTIONS_H_

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "lif.h"

namespace fused_lif {

template <typename E>
struct OptionName {
  const char* name;
  E value;
};

// The first entry of each table is the default.
constexpr OptionName<Surrogate> kSurrogateNames[] = {
    {"fast_sigmoid", Surrogate::kFastSigmoid},
    {"atan", Surrogate::kAtan},
    {"sigmoid", Surrogate::kSigmoid},
    {"triangle", Surrogate::kTriangle},
};
constexpr OptionName<Reset> kResetNames[] = {
    {"zero", Reset::kZero},
    {"subtract", Reset::kSubtract},
    {"none", Reset::kNone},
};

// "'a', 'b', 'c'": the names of a table, quoted, in order.
template <typename E, size_t K>
std::string quoted_names(const OptionName<E> (&table)[K]) {
  std::string out;
  for (size_t i = 0; i < K; ++i) out += (i ? ", '" : "'") + std::string(table[i].name) + "'";
  return out;
}

// The op schema's attribute, e.g. "reset: {'zero', 'subtract', 'none'} = 'zero'".
template <typename E, size_t K>
std::string attr_spec(const char* attr, const OptionName<E> (&table)[K]) {
  return std::string(attr) + ": {" + quoted_names(table) + "} = '" + table[0].name + "'";
}

// Parses `name`; false (and `value` untouched) if it is not in the table.
template <typename E, size_t K>
bool parse_option(const std::string& name, const OptionName<E> (&table)[K], E* value) {
  for (const auto& entry : table) {
    if (name == entry.name) {
      *value = entry.value;
      return true;
    }
  }
  return false;
}

template <typename E, size_t K>
const char* option_name(E value, const OptionName<E> (&table)[K]) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return "?";
}

inline const char* surrogate_name(Surrogate s) { return option_name(s, kSurrogateNames); }
inline const char* reset_name(Reset r) { return option_name(r, kResetNames); }

// "surrogate must be one of 'fast_sigmoid', ..., got 'relu'"
template <typename E, size_t K>
std::string unknown_option(const char* option, const std::string& name,
                           const OptionName<E> (&table)[K]) {
  return std::string(option) + " must be one of " + quoted_names(table) + ", got '" + name + "'";
}

// alpha, the surrogate's steepness: "" if valid, else what is wrong.
inline std::string check_alpha(double alpha) {
  if (std::isfinite(alpha) && alpha >= 0.0) return "";
  std::ostringstream out;
  out << "alpha (surrogate steepness) must be finite and >= 0, got " << alpha;
  return out.str();
}

// Values of decay and threshold, on host memory: "" if valid, else what is
// wrong. tau must be finite and >= 1, so decay = 1 - 1/tau is in [0, 1] (1
// where float32 rounds 1/tau away; an out-of-range tau in a graph arrives here
// as NaN, see _params.to_decay); threshold must not be NaN.
inline std::string check_param_values(const float* decay, int64_t decay_count,
                                      const float* threshold, int64_t threshold_count) {
  std::ostringstream out;
  for (int64_t i = 0; i < decay_count; ++i) {
    const float d = decay[i];
    if (!(d >= 0.0f && d <= 1.0f)) {  // false for NaN
      out << "tau must be finite and >= 1: decay = 1 - 1/tau = " << d << " at index " << i;
      if (d == d) out << " (tau = " << 1.0 / (1.0 - d) << ")";
      return out.str();
    }
  }
  for (int64_t i = 0; i < threshold_count; ++i) {
    if (std::isnan(threshold[i])) {
      out << "threshold is NaN at index " << i;
      return out.str();
    }
  }
  return "";
}

// Initial spikes s[-1] of the recurrent LIF ([rows, neurons] floats, host
// memory): "" if every value is 0 or 1, else the first other value and its
// [row, col].
inline std::string check_initial_spikes(const float* spikes, int64_t count, int64_t neurons) {
  for (int64_t i = 0; i < count; ++i) {
    if (!(spikes[i] == 0.0f || spikes[i] == 1.0f)) {
      std::ostringstream out;
      out << "initial_spikes must be binary (every value 0 or 1), got " << spikes[i] << " at ["
          << i / neurons << ", " << i % neurons << "]";
      return out.str();
    }
  }
  return "";
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_OPTIONS_H_
