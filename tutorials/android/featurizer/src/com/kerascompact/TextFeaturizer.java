package com.kerascompact;

import com.google.common.hash.HashFunction;
import com.google.common.hash.Hashing;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The app-side twin of {@code keras_compact.layers.TextFeaturizer}: a sentence to the
 * feature ids and weights that the exported projection model takes as its two inputs.
 *
 * <p>It follows the spec in the Python layer's docstring byte for byte: ASCII-only lower
 * casing; tokens are the runs of characters other than ASCII whitespace and punctuation;
 * word n-grams {@code "w:..."}, skip-bigrams {@code "s:..."}, code-point n-grams of
 * {@code "<token>"} {@code "c:..."}, in that order; each id is Fingerprint64 (farmhash) of
 * the feature's UTF-8 bytes, which Guava's {@code Hashing.farmHashFingerprint64()} computes.
 * Construct it with the same arguments as the Python layer (they are in the model's
 * metadata and in the layer's config).
 */
public final class TextFeaturizer {
  private static final String SEPARATORS = "\t\n\u000b\u000c\r !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  private static final HashFunction FINGERPRINT64 = Hashing.farmHashFingerprint64();

  /** Ids and weights of one sentence, in the order the model expects. */
  public static final class Features {
    public final long[] ids;
    public final float[] weights;

    Features(long[] ids, float[] weights) {
      this.ids = ids;
      this.weights = weights;
    }
  }

  private final int ngrams;
  private final int skipGrams;
  private final int charMin;
  private final int charMax;
  private final boolean lowercase;
  private final int maxTokens;
  private final float[] wordWeights;
  private final float skipWeight;
  private final float charWeight;

  /**
   * @param ngrams longest word n-gram (0: none)
   * @param skipGrams largest number of skipped tokens in a skip-bigram (0: none)
   * @param charMin shortest code-point n-gram, 0 for no character n-grams
   * @param charMax longest code-point n-gram
   * @param lowercase fold ASCII A-Z to a-z
   * @param maxTokens keep only this many leading tokens, 0 for all
   * @param wordWeights one weight per word n-gram order, or null for 1.0 each
   * @param skipWeight weight of a skip-gram
   * @param charWeight weight of a character n-gram
   */
  public TextFeaturizer(int ngrams, int skipGrams, int charMin, int charMax, boolean lowercase,
      int maxTokens, float[] wordWeights, float skipWeight, float charWeight) {
    if (ngrams < 0 || skipGrams < 0 || charMin < 0 || (charMin > 0 && charMax < charMin) || maxTokens < 0
        || (wordWeights != null && wordWeights.length != ngrams) || (ngrams == 0 && skipGrams == 0 && charMin == 0)) {
      throw new IllegalArgumentException("invalid featurizer arguments");
    }
    this.ngrams = ngrams;
    this.skipGrams = skipGrams;
    this.charMin = charMin;
    this.charMax = charMax;
    this.lowercase = lowercase;
    this.maxTokens = maxTokens;
    this.wordWeights = wordWeights;
    this.skipWeight = skipWeight;
    this.charWeight = charWeight;
  }

  /** The tokens of a sentence (spec steps 2-3). */
  public List<String> tokens(String sentence) {
    List<String> tokens = new ArrayList<>();
    StringBuilder token = new StringBuilder();
    sentence.codePoints().forEach(c -> {
      if (c < 128 && SEPARATORS.indexOf(c) >= 0) {
        if (token.length() > 0) {
          tokens.add(token.toString());
          token.setLength(0);
        }
      } else {
        token.appendCodePoint(lowercase && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
      }
    });
    if (token.length() > 0) {
      tokens.add(token.toString());
    }
    return maxTokens > 0 && tokens.size() > maxTokens ? tokens.subList(0, maxTokens) : tokens;
  }

  /** The feature strings and weights of a sentence (spec step 4). */
  public List<String> featureStrings(String sentence, List<Float> weights) {
    List<String> tokens = tokens(sentence);
    List<String> features = new ArrayList<>();
    for (int n = 1; n <= ngrams; n++) {
      for (int i = 0; i + n <= tokens.size(); i++) {
        features.add("w:" + String.join(" ", tokens.subList(i, i + n)));
        weights.add(wordWeights == null ? 1.0f : wordWeights[n - 1]);
      }
    }
    for (int gap = 1; gap <= skipGrams; gap++) {
      for (int i = 0; i + gap + 1 < tokens.size(); i++) {
        features.add("s:" + tokens.get(i) + " " + tokens.get(i + gap + 1));
        weights.add(skipWeight);
      }
    }
    if (charMin > 0) {
      for (int n = charMin; n <= charMax; n++) {
        for (String token : tokens) {
          int[] points = ("<" + token + ">").codePoints().toArray();
          for (int i = 0; i + n <= points.length; i++) {
            features.add("c:" + new String(points, i, n));
            weights.add(charWeight);
          }
        }
      }
    }
    return features;
  }

  /** Fingerprint64 of a feature string's UTF-8 bytes, as a signed long (spec step 5). */
  public static long featureId(String feature) {
    return FINGERPRINT64.hashBytes(feature.getBytes(StandardCharsets.UTF_8)).asLong();
  }

  /**
   * The exported model's two inputs for one sentence. LiteRT's LSH_PROJECTION rejects an
   * input of length 0, so a sentence without features becomes one feature of weight 0
   * (whose bits are those of no features).
   */
  public Features modelInputs(String sentence) {
    Features features = featurize(sentence);
    return features.ids.length > 0 ? features : new Features(new long[] {0L}, new float[] {0.0f});
  }

  /**
   * The input of an exported {@code sequence_network}: {@code keras_compact.layers.TokenBuckets}.
   * Token i (of at most {@code maxLength}) becomes {@code 1 + floorMod(Fingerprint64("w:" + token),
   * numBuckets)}; the rest of the array is 0 (padding). Uses this featurizer's lower casing.
   */
  public int[] tokenBuckets(String sentence, int numBuckets, int maxLength) {
    if (numBuckets < 1 || maxLength < 1) {
      throw new IllegalArgumentException("numBuckets and maxLength must be >= 1");
    }
    List<String> tokens = tokens(sentence);
    int[] buckets = new int[maxLength];
    for (int i = 0; i < Math.min(maxLength, tokens.size()); i++) {
      buckets[i] = 1 + (int) Math.floorMod(featureId("w:" + tokens.get(i)), (long) numBuckets);
    }
    return buckets;
  }

  /** The spec's features of one sentence (possibly none). */
  public Features featurize(String sentence) {
    List<Float> weightList = new ArrayList<>();
    List<String> features = featureStrings(sentence, weightList);
    long[] ids = new long[features.size()];
    float[] weights = new float[features.size()];
    for (int i = 0; i < ids.length; i++) {
      ids[i] = featureId(features.get(i));
      weights[i] = weightList.get(i);
    }
    return new Features(ids, weights);
  }
}
