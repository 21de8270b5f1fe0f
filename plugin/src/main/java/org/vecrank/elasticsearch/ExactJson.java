package org.vecrank.elasticsearch;

import org.elasticsearch.xcontent.XContentParser;
import org.elasticsearch.xcontent.XContentParserConfiguration;
import org.elasticsearch.xcontent.json.JsonXContent;

import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads JSON into maps and lists, keeping every number as its text.
 *
 * <p>XGBoost writes thresholds and leaf values as the shortest decimal that round-trips to a
 * float32. Reading them through a double and then narrowing could, in rare cases, round twice and
 * land on the neighbouring float; {@link Float#parseFloat} on the original text cannot.
 */
final class ExactJson {

    /** A JSON number, unparsed. */
    record Num(String text) {
        float asFloat() {
            return Float.parseFloat(text);
        }

        double asDouble() {
            return Double.parseDouble(text);
        }

        long asLong() {
            try {
                return Long.parseLong(text);
            } catch (NumberFormatException e) {
                double d = Double.parseDouble(text);
                if (d != Math.rint(d)) {
                    throw new IllegalArgumentException("[" + text + "] is not a whole number");
                }
                return (long) d;
            }
        }
    }

    private ExactJson() {}

    static Object parse(String json) {
        try (XContentParser parser = JsonXContent.jsonXContent.createParser(XContentParserConfiguration.EMPTY, json)) {
            XContentParser.Token token = parser.nextToken();
            if (token == null) {
                throw new IllegalArgumentException("empty JSON");
            }
            Object value = read(parser, token);
            if (parser.nextToken() != null) {
                throw new IllegalArgumentException("trailing content after the JSON value");
            }
            return value;
        } catch (IOException | RuntimeException e) {
            if (e instanceof IllegalArgumentException iae && iae.getCause() == null && iae.getMessage() != null
                && iae.getMessage().startsWith("[")) {
                throw iae;
            }
            throw new IllegalArgumentException("malformed JSON: " + firstLine(e.getMessage()), e);
        }
    }

    private static String firstLine(String message) {
        if (message == null) {
            return "unreadable";
        }
        int nl = message.indexOf('\n');
        return nl < 0 ? message : message.substring(0, nl);
    }

    private static Object read(XContentParser parser, XContentParser.Token token) throws IOException {
        switch (token) {
            case START_OBJECT: {
                Map<String, Object> map = new LinkedHashMap<>();
                for (XContentParser.Token t = parser.nextToken(); t != XContentParser.Token.END_OBJECT; t = parser.nextToken()) {
                    if (t != XContentParser.Token.FIELD_NAME) {
                        throw new IllegalArgumentException("expected a field name, got " + t);
                    }
                    String name = parser.currentName();
                    map.put(name, read(parser, parser.nextToken()));
                }
                return map;
            }
            case START_ARRAY: {
                List<Object> list = new ArrayList<>();
                for (XContentParser.Token t = parser.nextToken(); t != XContentParser.Token.END_ARRAY; t = parser.nextToken()) {
                    list.add(read(parser, t));
                }
                return list;
            }
            case VALUE_NUMBER:
                return new Num(parser.text());
            case VALUE_STRING:
                return parser.text();
            case VALUE_BOOLEAN:
                return parser.booleanValue();
            case VALUE_NULL:
                return null;
            default:
                throw new IllegalArgumentException("unexpected JSON token " + token);
        }
    }
}
