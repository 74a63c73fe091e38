// JS boundary of ring.h: the uncontended put and take of lib/ring.ts, one call each (a take of
// bytes is two: claim, then copy into a buffer JS gives, the caller's or one from Node's pool,
// or into a Buffer made here for 4 KiB and more), and the slow path's bounded spins. A status
// below zero sends the caller down ring.ts's slow path.
#include "../ring.h"

#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "../addon.h"
#include "../errors.h"
#include "../sysfail.h"
#include "args.h"

namespace mp {
namespace {

// The ring segment; a closed one (detached) makes an invalid view, and the caller's slow path
// then reports the ring closed the way it always has.
ring::View ViewArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArrayBuffer()) throw Napi::TypeError::New(info.Env(), "ring: segment must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[i].As<Napi::ArrayBuffer>();
  return ring::View(ab.Data(), ab.Data() == nullptr ? 0 : ab.ByteLength());
}

Napi::Uint8Array BytesArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Uint8Array");
  }
  return info[i].As<Napi::Uint8Array>();
}

ring::Self SelfArgs(const Napi::CallbackInfo& info, size_t i) {
  return ring::Self{static_cast<uint32_t>(IntArg(info, i, "lockId")), static_cast<uint32_t>(IntArg(info, i + 1, "start")),
                    static_cast<uint32_t>(IntArg(info, i + 2, "pid"))};
}

// ringTryPut(segment, payload, kind, counted, lockId, start, pid) -> status. The payload of a
// number (kind 1) is the number itself, written as its 8 bytes; of any other kind, a Uint8Array.
Napi::Value RingTryPut(const Napi::CallbackInfo& info) {
  RequireArgs(info, 7, "ringTryPut");
  ring::View view = ViewArg(info, 0);
  auto kind = static_cast<uint32_t>(IntArg(info, 2, "kind"));
  double number = 0;
  const uint8_t* payload;
  uint32_t length;
  if (kind == ring::kKindNumber) {
    if (!info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "ringTryPut: the payload of a number must be a number");
    number = info[1].As<Napi::Number>().DoubleValue();
    payload = reinterpret_cast<const uint8_t*>(&number);  // little-endian, as ring.ts's DataView writes it
    length = sizeof number;
  } else {
    Napi::Uint8Array bytes = BytesArg(info, 1, "bytes");
    payload = bytes.Data();
    length = static_cast<uint32_t>(bytes.ElementLength());
  }
  bool counted = info[3].ToBoolean();
  ring::Self self = SelfArgs(info, 4);
  if (!view.valid() || kind > 0xff) return Napi::Number::New(info.Env(), ring::kLocked);
  try {
    ring::Status status = view.TryPut(self, payload, length, kind, counted);
    return Napi::Number::New(info.Env(), status);
  } catch (const SysFail& f) {  // a futex wake refused
    ThrowSysFail(info.Env(), f);
  }
}

// ringTryClaim(segment, lockId, start, pid, out: Float64Array(4)) -> status; on kOk, out holds
// [position, length, kind, number]. A number is read and its frame finished here and now.
Napi::Value RingTryClaim(const Napi::CallbackInfo& info) {
  RequireArgs(info, 5, "ringTryClaim");
  ring::View view = ViewArg(info, 0);
  ring::Self self = SelfArgs(info, 1);
  if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      info[4].As<Napi::Float64Array>().ElementLength() < 4) {
    throw Napi::TypeError::New(info.Env(), "ringTryClaim: out must be a Float64Array of 4");
  }
  double* out = info[4].As<Napi::Float64Array>().Data();
  if (!view.valid()) return Napi::Number::New(info.Env(), ring::kLocked);
  ring::View::Claimed claimed;
  try {
    ring::Status status = view.TryClaim(self, &claimed);
    if (status != ring::kOk) return Napi::Number::New(info.Env(), status);
    out[0] = claimed.pos;
    out[1] = claimed.length;
    out[2] = claimed.kind;
    if (claimed.kind == ring::kKindNumber) {
      out[3] = view.NumberAt(claimed.pos);
      view.Finish(claimed.pos);
    }
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
  return Napi::Number::New(info.Env(), ring::kOk);
}

// ringTake(segment, position, dest: Uint8Array, destOffset, length, pid): copies `length` payload
// bytes of the frame this process claimed at `position` into dest at destOffset, then finishes the
// frame. The offset is ours, not a subarray's: a view per message was what V8 compiled most.
Napi::Value RingTake(const Napi::CallbackInfo& info) {
  RequireArgs(info, 6, "ringTake");
  ring::View view = ViewArg(info, 0);
  int64_t pos = IntArg(info, 1, "position");
  Napi::Uint8Array dest = BytesArg(info, 2, "dest");
  int64_t offset = IntArg(info, 3, "destOffset");
  int64_t length = IntArg(info, 4, "length");
  auto pid = static_cast<uint32_t>(IntArg(info, 5, "pid"));
  if (!view.valid()) throw Napi::Error::New(info.Env(), "ringTake: the ring is closed");
  if (pos < 0 || pos % 16 != 0 || pos >= view.capacity() || length < 0 || length > view.capacity()) {
    throw Napi::RangeError::New(info.Env(), "ringTake: position or length out of the ring");
  }
  if (offset < 0 || offset > static_cast<int64_t>(dest.ElementLength()) - length) {
    throw Napi::RangeError::New(info.Env(), "ringTake: destOffset and length reach past dest");
  }
  if (!view.ClaimedBy(static_cast<uint32_t>(pos), pid)) {
    throw Napi::Error::New(info.Env(), "ringTake: no frame claimed by this process there");
  }
  if (static_cast<uint32_t>(length) > view.LengthAt(static_cast<uint32_t>(pos))) {
    throw Napi::RangeError::New(info.Env(), "ringTake: length is more than the frame holds");
  }
  try {
    view.CopyOut(static_cast<uint32_t>(pos), dest.Data() + offset, static_cast<uint32_t>(length));
    view.Finish(static_cast<uint32_t>(pos));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
  return info.Env().Undefined();
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels refuse it with EINVAL, and we fault as before
#endif

// A new Buffer for a large message comes from the allocator, often as memory never touched: the
// copy into it then takes a page fault per page (~2 us each on a 2-vCPU VM: most of a 64 KiB
// take). When its first whole page is not resident, all its whole pages are made so in one call,
// with no fault each. When it is resident (memory the allocator had back from a collected Buffer),
// nothing: the check is one mincore(). Best effort: any failure leaves the copy to fault.
void PrefaultIfFresh(uint8_t* data, size_t length) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t first = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(data) + length) & ~(page - 1);
  if (end < first + 4 * page) return;  // under four whole pages: not worth a system call
  unsigned char resident = 0;
  if (mincore(reinterpret_cast<void*>(first), page, &resident) != 0 || (resident & 1) != 0) return;
  madvise(reinterpret_cast<void*>(first), end - first, MADV_POPULATE_WRITE);
}

// ringTakeCopy(segment, position, length, pid) -> Buffer: ringTake into a new Buffer of `length`
// bytes made here, uninitialised before the copy (Buffer.allocUnsafe in JS was most of what V8
// compiled on a busy consumer's path).
Napi::Value RingTakeCopy(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "ringTakeCopy");
  ring::View view = ViewArg(info, 0);
  int64_t pos = IntArg(info, 1, "position");
  int64_t length = IntArg(info, 2, "length");
  auto pid = static_cast<uint32_t>(IntArg(info, 3, "pid"));
  if (!view.valid()) throw Napi::Error::New(info.Env(), "ringTakeCopy: the ring is closed");
  if (pos < 0 || pos % 16 != 0 || pos >= view.capacity() || length < 0 || length > view.capacity()) {
    throw Napi::RangeError::New(info.Env(), "ringTakeCopy: position or length out of the ring");
  }
  if (!view.ClaimedBy(static_cast<uint32_t>(pos), pid)) {
    throw Napi::Error::New(info.Env(), "ringTakeCopy: no frame claimed by this process there");
  }
  if (static_cast<uint32_t>(length) > view.LengthAt(static_cast<uint32_t>(pos))) {
    throw Napi::RangeError::New(info.Env(), "ringTakeCopy: length is more than the frame holds");
  }
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(info.Env(), static_cast<size_t>(length));
  PrefaultIfFresh(out.Data(), static_cast<size_t>(length));
  try {
    view.CopyOut(static_cast<uint32_t>(pos), out.Data(), static_cast<uint32_t>(length));
    view.Finish(static_cast<uint32_t>(pos));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
  return out;
}

// The kinds TryRingGet makes values of: all but v8-serialized and out-of-line messages, which
// need JS to decode (queues.ts decodeFrame).
constexpr uint32_t kNativeKinds = 1u << ring::kKindNumber | 1u << ring::kKindString | 1u << ring::kKindBytes |
                                  1u << ring::kKindUndefined | 1u << ring::kKindNull | 1u << ring::kKindTrue |
                                  1u << ring::kKindFalse;

// The value of a claimed frame, as decodeFrame makes it; null if V8 refused to make it.
napi_value ValueOf(napi_env env, const ring::View& view, const ring::View::Claimed& c) {
  napi_value value = nullptr;
  napi_status status = napi_generic_failure;
  switch (c.kind) {
    case ring::kKindNumber:
      status = napi_create_double(env, view.NumberAt(c.pos), &value);
      break;
    case ring::kKindString: {
      // V8 copies the bytes as it decodes them: straight from the ring unless they wrap its end.
      if (const uint8_t* whole = view.PayloadIfWhole(c.pos, c.length)) {
        status = napi_create_string_utf8(env, reinterpret_cast<const char*>(whole), c.length, &value);
        break;
      }
      std::string text(c.length, '\0');
      view.CopyOut(c.pos, reinterpret_cast<uint8_t*>(text.data()), c.length);
      status = napi_create_string_utf8(env, text.data(), text.size(), &value);
      break;
    }
    case ring::kKindBytes: {
      void* data = nullptr;
      status = napi_create_buffer(env, c.length, &data, &value);
      if (status == napi_ok && c.length > 0) {
        PrefaultIfFresh(static_cast<uint8_t*>(data), c.length);
        view.CopyOut(c.pos, static_cast<uint8_t*>(data), c.length);
      }
      break;
    }
    case ring::kKindUndefined:
      status = napi_get_undefined(env, &value);
      break;
    case ring::kKindNull:
      status = napi_get_null(env, &value);
      break;
    case ring::kKindTrue:
    case ring::kKindFalse:
      status = napi_get_boolean(env, c.kind == ring::kKindTrue, &value);
      break;
  }
  return status == napi_ok ? value : nullptr;
}

// The spins take microseconds; a closed (detached) segment ends them at once.
int64_t SpinNs(const Napi::CallbackInfo& info, size_t i) {
  int64_t us = IntArg(info, i, "microseconds");
  if (us < 0 || us > 1000000) throw Napi::RangeError::New(info.Env(), "ring spin: microseconds must be between 0 and 1000000");
  return us * 1000;
}

// ringSpinUntilReady(segment, microseconds) -> whether a frame is ready to claim.
Napi::Value RingSpinUntilReady(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "ringSpinUntilReady");
  ring::View view = ViewArg(info, 0);
  int64_t ns = SpinNs(info, 1);
  return Napi::Boolean::New(info.Env(), view.valid() && view.SpinUntilReady(ns));
}

// ringSpinWhileBusy(segment, microseconds) -> whether the oldest frame is ready now.
Napi::Value RingSpinWhileBusy(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "ringSpinWhileBusy");
  ring::View view = ViewArg(info, 0);
  int64_t ns = SpinNs(info, 1);
  return Napi::Boolean::New(info.Env(), view.valid() && view.SpinWhileBusy(ns));
}

// ringSpinWhile(segment, word, seen, microseconds) -> whether header word `word` changed from `seen`.
Napi::Value RingSpinWhile(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "ringSpinWhile");
  ring::View view = ViewArg(info, 0);
  int64_t word = IntArg(info, 1, "word");
  if (word < 0 || word >= static_cast<int64_t>(ring::kHeaderBytes / 4)) throw Napi::RangeError::New(info.Env(), "ringSpinWhile: word is not a header word");
  auto seen = static_cast<uint32_t>(IntArg(info, 2, "seen"));
  int64_t ns = SpinNs(info, 3);
  return Napi::Boolean::New(info.Env(), view.valid() && view.SpinWhile(static_cast<int>(word), seen, ns));
}

}  // namespace

bool TryRingGet(napi_env env, const RingGet& take, napi_value* value, uint32_t* pos) {
  ring::View view(take.base, take.size);
  if (take.base == nullptr || !view.valid()) return false;
  ring::View::Claimed claimed;
  if (view.TryClaim(take.self, &claimed, kNativeKinds) != ring::kOk) return false;
  *value = ValueOf(env, view, claimed);
  if (*value == nullptr) {
    // Left to a later consumer; the waiter is told as if nothing was claimed, which a pending
    // exception would keep from being called.
    view.Abandon(claimed.pos);
    napi_value ignored = nullptr;
    napi_get_and_clear_last_exception(env, &ignored);
    return false;
  }
  *pos = claimed.pos;
  return true;
}

void FinishRingGet(const RingGet& take, uint32_t pos) {
  ring::View(take.base, take.size).Finish(pos);
}

void AbandonRingGet(const RingGet& take, uint32_t pos) {
  ring::View(take.base, take.size).Abandon(pos);
}

void InitRing(Napi::Env env, Napi::Object exports) {
  exports.Set("ringTryPut", Napi::Function::New(env, RingTryPut, "ringTryPut"));
  exports.Set("ringTryClaim", Napi::Function::New(env, RingTryClaim, "ringTryClaim"));
  exports.Set("ringTake", Napi::Function::New(env, RingTake, "ringTake"));
  exports.Set("ringTakeCopy", Napi::Function::New(env, RingTakeCopy, "ringTakeCopy"));
  exports.Set("ringSpinUntilReady", Napi::Function::New(env, RingSpinUntilReady, "ringSpinUntilReady"));
  exports.Set("ringSpinWhileBusy", Napi::Function::New(env, RingSpinWhileBusy, "ringSpinWhileBusy"));
  exports.Set("ringSpinWhile", Napi::Function::New(env, RingSpinWhile, "ringSpinWhile"));
}

}  // namespace mp
