package com.kerascompact;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Command line used by the parity tests: arguments are the featurizer's
 * (ngrams skipGrams charMin charMax lowercase maxTokens), or {@code tokens numBuckets maxLength
 * lowercase} for {@code TokenBuckets}; each stdin line is one sentence as hexadecimal UTF-8
 * bytes (so any bytes and newlines travel safely); each output line is {@code id:weight} pairs,
 * or the token buckets, separated by spaces. With {@code --time} as the last argument it prints
 * only the median microseconds per sentence over 20 passes (the featurizer's speed).
 */
public final class FeaturizerMain {
  public static void main(String[] args) throws Exception {
    boolean time = args[args.length - 1].equals("--time");
    boolean tokens = args[0].equals("tokens");
    TextFeaturizer featurizer = tokens
        ? new TextFeaturizer(1, 0, 0, 0, Boolean.parseBoolean(args[3]), 0, null, 1.0f, 1.0f)
        : new TextFeaturizer(Integer.parseInt(args[0]), Integer.parseInt(args[1]),
            Integer.parseInt(args[2]), Integer.parseInt(args[3]), Boolean.parseBoolean(args[4]),
            Integer.parseInt(args[5]), null, 1.0f, 1.0f);
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
    List<String> sentences = new ArrayList<>();
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      byte[] bytes = new byte[line.length() / 2];
      for (int i = 0; i < bytes.length; i++) {
        bytes[i] = (byte) Integer.parseInt(line.substring(2 * i, 2 * i + 2), 16);
      }
      sentences.add(StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPLACE)
          .onUnmappableCharacter(CodingErrorAction.REPLACE)
          .decode(ByteBuffer.wrap(bytes)).toString());
    }
    if (time) {
      long[] passes = new long[20];
      long sink = 0;
      for (int pass = 0; pass < passes.length; pass++) {
        long start = System.nanoTime();
        for (String sentence : sentences) {
          sink += tokens ? featurizer.tokenBuckets(sentence, Integer.parseInt(args[1]), Integer.parseInt(args[2]))[0]
              : featurizer.featurize(sentence).ids.length;
        }
        passes[pass] = System.nanoTime() - start;
      }
      Arrays.sort(passes);
      System.out.println(passes[passes.length / 2] / 1000.0 / sentences.size() + (sink == 42 ? " " : ""));
      return;
    }
    StringBuilder out = new StringBuilder();
    for (String sentence : sentences) {
      if (tokens) {
        int[] buckets = featurizer.tokenBuckets(sentence, Integer.parseInt(args[1]), Integer.parseInt(args[2]));
        for (int i = 0; i < buckets.length; i++) {
          out.append(i == 0 ? "" : " ").append(buckets[i]);
        }
      } else {
        TextFeaturizer.Features features = featurizer.featurize(sentence);
        for (int i = 0; i < features.ids.length; i++) {
          out.append(i == 0 ? "" : " ").append(features.ids[i]).append(':').append(features.weights[i]);
        }
      }
      out.append('\n');
    }
    System.out.print(out);
  }
}
