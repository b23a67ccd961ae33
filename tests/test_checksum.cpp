// tram::fnv1a_64 is part of the checkpoint format (the payload checksum of
// format 2) and of the study's text split: its values are pinned here, from
// the published FNV-1a test vectors and an independent computation.
#include <tram/checksum.h>

#include <gtest/gtest.h>

#include <string>

namespace {

TEST(Checksum, Fnv1aMatchesPublishedVectors) {
  EXPECT_EQ(tram::fnv1a_64(""), 0xcbf29ce484222325ull);  // the offset basis
  EXPECT_EQ(tram::fnv1a_64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(tram::fnv1a_64("foobar"), 0x85944171f73967e8ull);
}

TEST(Checksum, Fnv1aReadsBytesAsUnsigned) {
  // Bytes >= 0x80 must be XORed in as 0x80..0xff, not sign-extended: UTF-8
  // text and tensor bytes have them.
  const std::string bytes("\xff\x00\x80", 3);
  EXPECT_EQ(tram::fnv1a_64(bytes.data(), bytes.size()), 0xf920891be415651eull);
  EXPECT_EQ(tram::fnv1a_64("\xc3\xa9\xe2\x82\xac"), 0xba582a10a52c31b7ull);  // "é€"
  EXPECT_NE(tram::fnv1a_64("ab"), tram::fnv1a_64("ba"));
}

}  // namespace
